"""Every error leaves the API as ``{"error": {"code", "message", "details"?}}`` with a fitting status."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from smartseg.shared.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    SmartsegError,
    Unauthorized,
)

log = logging.getLogger(__name__)

BODY_NOT_PARSED = 400  # the only 400 FastAPI raises: "There was an error parsing the body"
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
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == BODY_NOT_PARSED:
            # FastAPI's answer to a body json.loads gave up on (invalid UTF-8, nesting past the recursion
            # limit, an integer past Python's digit limit): the same 422 as any other malformed JSON.
            return error_response(InvalidRequest("the request body is not valid JSON"))
        code = HTTP_CODES.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("redis error: %s", exc)
        return error_response(ServiceUnavailable("the job store is unavailable; try again"))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(SmartsegError("internal error"))
