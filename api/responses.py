"""Responses built from models that are valid by construction."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel

from smartseg.shared.schemas import ErrorBody

JSON = "application/json"


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The model as JSON; returning it as-is spares FastAPI validating it again."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)


ERRORS = {
    401: "`unauthorized`: the API key is missing or unknown (revoked keys included).",
    404: "`not_found`: no such job (or output of it), or another key's job.",
    409: "`idempotency_conflict`: an Idempotency-Key reused with another body; "
    "`job_already_finished`: a cancel of a job that ended.",
    413: "`payload_too_large`: the body is over `SMARTSEG_MAX_REQUEST_BYTES` (chunked bodies too).",
    422: "`invalid_request` (malformed JSON, or a body, header or parameter out of bounds: `details.errors` "
    "lists each), `unknown_region`, `unknown_pipeline`, `image_url_forbidden`, `image_too_large`.",
    429: "`rate_limited`: the key's budget is spent (reads, interactive or batch submissions each have one); "
    "`too_many_jobs` (submits): the key has as many jobs queued or running as it may. "
    "`Retry-After`, `RateLimit-Policy` and `RateLimit` say when there is room again.",
    503: "`service_unavailable`: Redis (or, for an output's file, the mask storage) cannot be reached; "
    "try again.",
}


RATE_LIMIT_HEADERS = {
    "Retry-After": "Seconds until the request can succeed.",
    "RateLimit-Policy": 'The budget: `"<budget>";q=<burst>;w=<seconds to refill>`.',
    "RateLimit": 'What is left: `"<budget>";r=<tokens left>;t=<seconds>` (`t`: until the budget is full '
    "again; on a 429, until the request can succeed).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors an operation can answer with: the one error body, and its codes."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses
    }
    if 429 in responses:
        responses[429]["headers"] = {name: header(text) for name, text in RATE_LIMIT_HEADERS.items()}
    return responses


def success(
    headers: dict[str, dict[str, Any]] | None = None, description: str | None = None
) -> dict[str, Any]:
    """The OpenAPI entry for a success of an operation that spends a token: its own ``headers`` and the
    RateLimit headers of the budget it spent."""
    entry: dict[str, Any] = {"headers": {**(headers or {}), **BUDGET_HEADERS}}
    if description:
        entry["description"] = description
    return entry


def header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# What every response to a request that spent a token carries (a 429 adds Retry-After).
BUDGET_HEADERS = {name: header(RATE_LIMIT_HEADERS[name]) for name in ("RateLimit-Policy", "RateLimit")}
