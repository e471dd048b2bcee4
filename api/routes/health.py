"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from smartseg.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis answers")
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        await services.redis_async.ping()
    except Exception:
        return JSONResponse({"status": "unavailable", "redis": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "up"})
