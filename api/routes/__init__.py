"""Every resource's router, collected in one place."""

from fastapi import APIRouter

from smartseg.api.routes import (
    batches,
    docs,
    health,
    metrics,
    playground,
    regions,
    segmentations,
    usage,
    webhooks,
)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(segmentations.router)
api_router.include_router(regions.router)
api_router.include_router(usage.router)
api_router.include_router(webhooks.router)
api_router.include_router(batches.router)
api_router.include_router(playground.router)
api_router.include_router(docs.router)
