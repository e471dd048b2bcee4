"""ASGI middleware: each API request's access log line and HTTP metrics.

A request is named by its method and its route's path template (``/v1/segmentations/{job_id}``), never by
its raw path or query string: a label value per job id would grow Prometheus without bound, and a query
string can carry anything. The caller is named by its key's public id (``Caller.key_id``, which the auth
dependency leaves in ``request.state``), never by the key.
"""

from __future__ import annotations

import logging
import time

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartseg.shared.jobstore import is_job_id
from smartseg.shared.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

log = logging.getLogger("smartseg.api.access")

UNMATCHED = "unmatched"  # the route of a request no route matched (a 404)
# Any other method a client sends is counted as this: each label value is a series Prometheus keeps.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# Probes and scrapes come every few seconds: their lines are DEBUG, so INFO shows what clients do.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# request.state.<this>: the caller's key id (set by deps.require_caller).
KEY_ID_FIELD = "key_id"


class RequestLog:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the app's, to name requests answered before routing (a body over the limit)
        self._flat: list[BaseRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrived = dict(scope)  # as it came: routing rewrites the path and root_path of a mount's requests
        status = 500  # what the server answers when the app raises before it starts a response

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self._record(scope, arrived, status, time.perf_counter() - started)

    def route_of(self, scope: Scope, arrived: Scope) -> str:
        """The path template of the route the request matched (a mount's is ``/static/{path}``)."""
        route = scope.get("route")
        if route is None:  # a mount's, answered before routing, or nothing matched
            if self._flat is None:
                self._flat = _flattened(self.routes)
            route = next((each for each in self._flat if each.matches(arrived)[0] is not Match.NONE), None)
        template = getattr(route, "path_format", None)
        return template if isinstance(template, str) else UNMATCHED

    def _record(self, scope: Scope, arrived: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
        route = self.route_of(scope, arrived)
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_REQUEST_SECONDS.labels(method, route).observe(seconds)
        key_id = scope.get("state", {}).get(KEY_ID_FIELD)
        fields: dict[str, object] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_s": round(seconds, 4),
            "key_id": key_id,
        }
        job_id = scope.get("path_params", {}).get("job_id")
        if isinstance(job_id, str) and is_job_id(job_id):  # a path says anything a client typed
            fields["job_id"] = job_id
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        log.log(
            level,
            "%s %s %d %.3fs key=%s%s",
            method,
            route,
            status,
            fields["duration_s"],  # the field's value, so the line and the field never disagree
            key_id or "-",
            f" job={fields['job_id']}" if "job_id" in fields else "",
            extra=fields,
        )


def _flattened(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps an included router as one route)."""
    flat: list[BaseRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        flat += _flattened(included.routes) if included is not None else [route]
    return flat
