"""``/docs`` (Swagger UI) and ``/redoc``: the OpenAPI document rendered from bundles served here (offline)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from smartseg.api.pages import PAGE_CSP, REDOC_CSP, STATIC, page

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> FileResponse:
    return page(STATIC / "docs" / "swagger.html", PAGE_CSP)


@router.get("/redoc")
async def redoc() -> FileResponse:
    return page(STATIC / "docs" / "redoc.html", REDOC_CSP)
