"""The API application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from smartseg.api.body_limit import BodyLimit
from smartseg.api.errors import UnexpectedErrors, install_error_handlers
from smartseg.api.openapi import name_deployment_choices
from smartseg.api.pages import mount_static
from smartseg.api.rate_limits import RateLimitHeaders
from smartseg.api.request_log import RequestLog
from smartseg.api.routes import api_router
from smartseg.api.routes.metrics import REGISTRY_FIELD
from smartseg.api.services import Services
from smartseg.shared.metrics import registry
from smartseg.shared.settings import Settings


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Build the app; connections are made lazily, so building one never touches the network."""
    built = services or Services.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await built.close()

    app = FastAPI(
        title="smartseg",
        version="0.1.0",
        summary="Self-hostable smart segmentation: an image URL and a text prompt in, masks out.",
        lifespan=lifespan,
        # Served from local bundles by routes/docs.py: FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = built
    setattr(app.state, REGISTRY_FIELD, registry("api"))
    install_error_handlers(app)
    app.include_router(api_router)
    mount_static(app)
    name_deployment_choices(app, settings.regions, settings.pipelines)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(UnexpectedErrors)  # it also answers for the others
    app.add_middleware(RequestLog, routes=app.router.routes)  # outermost: it sees every final status
    return app
