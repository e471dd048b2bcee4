"""``/metrics``: the API process's Prometheus metrics, and every region's health, live workers and queue
depth, read from Redis at scrape time (``region_states``, as ``/v1/regions`` reads them).

No API key, as for ``/healthz``: it names no caller and no job. Outside the OpenAPI document (it is not
part of the API clients program against)."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool

from smartseg.api.deps import ServicesDep
from smartseg.shared.metrics import QUEUE_DEPTH, REGION_HEALTHY, REGION_LIVE_WORKERS
from smartseg.shared.regions import region_states

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
# app.state.<this>: the registry create_app made for the API's metrics.
REGISTRY_FIELD = "metrics_registry"


@router.get("/metrics")
async def metrics(request: Request, services: ServicesDep) -> Response:
    try:
        states = await run_in_threadpool(
            region_states, services.redis, services.store.keys, services.settings.regions
        )
    except redis.RedisError as exc:
        # The request counts still say something; the regions' figures are unknown, so none are shown.
        log.warning("metrics: regions not read (%s)", exc)
        for gauge in (QUEUE_DEPTH, REGION_HEALTHY, REGION_LIVE_WORKERS):
            gauge.clear()
    else:
        for state in states:
            REGION_HEALTHY.labels(state.region).set(int(state.healthy))
            REGION_LIVE_WORKERS.labels(state.region).set(state.live_workers)
            for priority, queued in state.queued.items():
                QUEUE_DEPTH.labels(state.region, priority).set(queued)
    registry: CollectorRegistry = getattr(request.app.state, REGISTRY_FIELD)
    # The format the scraper asks for (Prometheus text, or OpenMetrics), as a process's own port answers.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)
