"""``/v1/regions``: each region's health, capacity and backlog, from heartbeats and queue lengths."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Owner, ServicesDep
from api.routes.segmentations import json_response
from shared.regions import region_summaries
from shared.schemas import Region, RegionList

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get("", response_model=RegionList, summary="Health, workers and queues of every region")
async def list_regions(owner: Owner, services: ServicesDep) -> Response:
    store = services.store
    summaries = await run_in_threadpool(region_summaries, store.redis, store.keys, services.settings.regions)
    return json_response(RegionList(data=[Region(**summary) for summary in summaries]))
