"""The OpenAPI document tells the truth: every operation's errors in the one error body, the Bearer
scheme, and the headers the API sends."""

from __future__ import annotations

from typing import Any

import pytest

from smartseg.api.app import create_app
from smartseg.shared.settings import Settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
RATE_LIMIT = {"RateLimit-Policy", "RateLimit"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    # Building the app connects to nothing, so unreachable services are fine here.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", s3_endpoint="http://127.0.0.1:9")
    return create_app(settings).openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in methods.items()
    ]


def test_every_operation_needs_a_bearer_key_and_says_so(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer sk-...`",
    }
    for method, path, operation in operations(spec):
        assert operation["security"] == [{"HTTPBearer": []}], (method, path)
        assert "401" in operation["responses"], (method, path)


def test_every_error_status_has_the_real_error_body(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's shape is never sent
    for method, path, operation in operations(spec):
        errors = {status: body for status, body in operation["responses"].items() if int(status) >= 400}
        assert {"401", "503"} <= set(errors), (method, path)
        for status, body in errors.items():
            assert body["content"]["application/json"]["schema"] == ERROR_BODY, (method, path, status)
    submit = spec["paths"]["/v1/segmentations"]["post"]["responses"]
    assert {"401", "409", "413", "422", "503"} <= set(submit)


def test_the_headers_the_api_sends_are_documented(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/v1/segmentations"]["post"]
    assert set(submit["responses"]["202"]["headers"]) == {
        "Location",
        "Idempotent-Replayed",
        "Preference-Applied",
        *RATE_LIMIT,
    }
    assert {parameter["name"] for parameter in submit["parameters"]} == {"prefer", "idempotency-key"}
    read = spec["paths"]["/v1/segmentations/{job_id}"]["get"]
    assert set(read["responses"]["200"]["headers"]) == {"Preference-Applied", *RATE_LIMIT}


def test_every_success_and_429_says_what_is_left_of_the_budget(spec: dict[str, Any]) -> None:
    # Every /v1 operation spends a token, and its answer carries the RateLimit headers whatever the status.
    for method, path, operation in operations(spec):
        successes = [status for status in operation["responses"] if status.startswith("2")]
        assert successes, (method, path)
        for status in successes:
            assert set(operation["responses"][status]["headers"]) >= RATE_LIMIT, (method, path, status)
            if status != "204":  # No Content
                assert operation["responses"][status]["content"], (method, path, status)  # the body stays
        assert set(operation["responses"]["429"]["headers"]) == {"Retry-After", *RATE_LIMIT}, (method, path)
