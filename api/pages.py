"""The HTML pages the API serves beside the JSON API (the playground, the API docs), their static files, and
the headers both are served with.

Everything a page loads comes from this origin, so a strict Content-Security-Policy holds: no inline
script or style, no other host. The docs' Swagger UI and ReDoc bundles come from the ``fastapi-offline``
package rather than a CDN, so the docs work on a machine without internet too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

import smartseg.api
from smartseg.shared.errors import StartupError

STATIC = Path(smartseg.api.__file__).parent / "static"

# Every page gets this: scripts, styles and data only from this origin; images also from data: and blob:
# URLs (the pages make those from files and fetched masks); no plugins, frames, forms or <base>.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The playground also shows an image given by URL, as a plain <img>: the worker fetches it, the page only
# displays it (never reads its pixels, so the mask canvases stay untainted).
PLAYGROUND_CSP = PAGE_CSP.replace("img-src 'self' data: blob:", "img-src 'self' data: blob: http: https:")
# ReDoc styles itself with styled-components, which injects <style> elements at run time, and runs its
# search index in a worker made from a blob: URL. Scripts stay 'self' only.
REDOC_CSP = (
    PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") + "; worker-src 'self' blob:"
)
# For every static file too: a browser must not guess a script out of a mask or a sample.
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def page(path: Path, csp: str) -> FileResponse:
    """An HTML file from ``STATIC``, under ``csp``."""
    return FileResponse(
        path, media_type="text/html", headers={**ASSET_HEADERS, "Content-Security-Policy": csp}
    )


class StaticAssets(StaticFiles):
    """Static files with ``ASSET_HEADERS``. Symlinks are followed: the editable install (``make``) is a tree
    of links into the repository, and paths are still confined to the folder (``..`` is resolved first).
    A missing folder fails the requests for it, not the app's start."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, follow_symlink=True, check_dir=False)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(ASSET_HEADERS)
        return response


def mount_static(app: FastAPI) -> None:
    """``/static/vendor``: the Swagger UI and ReDoc bundles; ``/static``: the pages' own scripts and styles;
    ``/samples``: the playground's sample images and their ``index.json``."""
    app.mount("/static/vendor", StaticAssets(_package_folder("fastapi_offline", "static")), name="vendor")
    app.mount("/static", StaticAssets(STATIC), name="static")
    app.mount("/samples", StaticAssets(STATIC / "samples"), name="samples")


def _package_folder(package: str, folder: str) -> Path:
    """A folder inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise StartupError(f"the {package!r} package is not installed (pip install {package})")
    return Path(spec.origin).parent / folder
