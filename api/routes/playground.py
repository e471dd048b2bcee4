"""``/``: the playground, a page that submits jobs and draws their masks (``api/static/playground/``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from smartseg.api.pages import PLAYGROUND_CSP, STATIC, page

# A page, not an operation of the API: it stays out of the OpenAPI document (and out of the fuzzer's way).
router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return page(STATIC / "playground" / "index.html", PLAYGROUND_CSP)
