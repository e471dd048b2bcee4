"""Every error leaves the API as ``{"error": {"code", "message", "details"?}}`` with a fitting status."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartseg.shared.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    SmartsegError,
    Unauthorized,
)

log = logging.getLogger(__name__)

BODY_NOT_PARSED = 400  # the only 400 FastAPI raises: "There was an error parsing the body"
METHOD_NOT_ALLOWED = 405
HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(error: SmartsegError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    if isinstance(error, RateLimited):
        headers = error.headers
    return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=headers)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the OpenAPI document gives ``path``. Starlette's 405 names only the first route on the
    path, and a path can have several (``GET`` and ``POST /v1/segmentations`` are two routes)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern, _, _ = compile_path(template)
        if pattern.match(path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SmartsegError)
    async def smartseg_error(_: Request, exc: SmartsegError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(part) for part in item.get("loc", ())], "message": str(item.get("msg", ""))}
            for item in exc.errors()
        ]
        return error_response(InvalidRequest("the request is invalid", {"errors": problems}))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == BODY_NOT_PARSED:
            # FastAPI's answer to a body json.loads gave up on (invalid UTF-8, nesting past the recursion
            # limit, an integer past Python's digit limit): the same 422 as any other malformed JSON.
            return error_response(InvalidRequest("the request body is not valid JSON"))
        code = HTTP_CODES.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == METHOD_NOT_ALLOWED:
            # Paths outside the document (pages, static files) keep the Allow their route gave.
            methods = allowed_methods(app, request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("redis error: %s", exc)
        return error_response(ServiceUnavailable("the job store is unavailable; try again"))


class UnexpectedErrors:
    """ASGI middleware: an unexpected exception is answered with the JSON 500, and the connection stays
    usable. (A handler for ``Exception`` runs in Starlette's ServerErrorMiddleware, which raises again after
    answering; uvicorn then closes the kept-alive connection without saying ``Connection: close``, and the
    client's next request on it is reset.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            log.exception("unhandled error", exc_info=exc)
            if started:
                raise  # half a response cannot be mended: the server closes the connection
            await error_response(SmartsegError("internal error"))(scope, receive, send)
