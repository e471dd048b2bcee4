"""``/v1/regions``: each region's health, capacity and backlog, from heartbeats and queue lengths."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from smartseg.api.deps import Owner, ServicesDep
from smartseg.api.responses import error_responses, json_response, success
from smartseg.shared.keys import BATCH, INTERACTIVE
from smartseg.shared.regions import RegionState, region_states, seconds_since
from smartseg.shared.schemas import Region, RegionList

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get(
    "",
    response_model=RegionList,
    summary="Health, workers and queues of every region",
    responses={200: success(), **error_responses(401, 429, 503)},
)
async def list_regions(owner: Owner, services: ServicesDep) -> Response:
    states = await run_in_threadpool(
        region_states, services.redis, services.store.keys, services.settings.regions
    )
    return json_response(RegionList(data=[_shown(state) for state in states]))


def _shown(state: RegionState) -> Region:
    return Region(
        region=state.region,
        healthy=state.healthy,
        live_workers=state.live_workers,
        queued_interactive=state.queued[INTERACTIVE],
        queued_batch=state.queued[BATCH],
        running=state.busy_workers,
        seconds_since_last_beat=seconds_since(state.last_beat_at),
        pipelines=sorted(state.pipelines),
    )
