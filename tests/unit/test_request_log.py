"""The API's access log and HTTP metrics: requests named by route template (never the raw path or query
string), the caller by its key id (never the key), every final status counted, probes kept quiet."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.api.body_limit import BodyLimit
from smartseg.api.request_log import UNMATCHED, RequestLog
from smartseg.shared.metrics import registry
from smartseg.shared.settings import Settings

JOB = "seg_0123456789abcdef01234567"
KEY = "sk-live-do-not-log"


def requests_counted(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return registry("api").get_sample_value("smartseg_http_requests_total", labels) or 0.0


async def caller(request: Request) -> None:
    request.state.key_id = "key_public"  # what deps.require_caller leaves for the log


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()

    @app.get("/v1/things/{job_id}", dependencies=[Depends(caller)])
    async def thing(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    @app.post("/v1/things")
    async def make() -> dict[str, str]:
        return {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {}

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(BodyLimit, max_bytes=16)
    app.add_middleware(RequestLog, routes=app.router.routes)
    return TestClient(app, raise_server_exceptions=False)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [entry for entry in caplog.records if entry.name == "smartseg.api.access"]


def test_a_request_is_named_by_its_route_template_and_its_key_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = requests_counted("GET", "/v1/things/{job_id}", 200)
    with caplog.at_level(logging.INFO, "smartseg.api.access"):
        answer = client.get(f"/v1/things/{JOB}?token=query-secret", headers={"Authorization": KEY})
    assert answer.status_code == 200
    assert requests_counted("GET", "/v1/things/{job_id}", 200) == before + 1
    [line] = access_lines(caplog)
    fields: dict[str, Any] = line.__dict__
    assert {name: fields[name] for name in ("method", "route", "status", "key_id", "job_id")} == {
        "method": "GET",
        "route": "/v1/things/{job_id}",
        "status": 200,
        "key_id": "key_public",
        "job_id": JOB,
    }
    assert fields["duration_s"] >= 0
    shown = line.getMessage() + repr(fields)
    assert KEY not in shown and "query-secret" not in shown
    assert line.getMessage() == (
        f"GET /v1/things/{{job_id}} 200 {fields['duration_s']:.3f}s key=key_public job={JOB}"
    )


def test_every_final_status_is_counted_under_a_bounded_route(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        (lambda: client.get("/v1/nothing/here"), "GET", UNMATCHED, 404),
        (lambda: client.post("/v1/things", content=b"x" * 100), "POST", "/v1/things", 413),  # before routing
        (lambda: client.post("/healthz"), "POST", "/healthz", 405),
        (lambda: client.get("/v1/broken"), "GET", "/v1/broken", 500),
        (lambda: client.get("/v1/things/not-a-job"), "GET", "/v1/things/{job_id}", 200),
        (lambda: client.request("BREW", "/healthz"), "other", "/healthz", 405),
    ]
    for call, method, route, status in cases:
        before = requests_counted(method, route, status)
        with caplog.at_level(logging.INFO, "smartseg.api.access"):
            assert call().status_code == status
        assert requests_counted(method, route, status) == before + 1, (method, route, status)
    assert "job_id" not in access_lines(caplog)[-2].__dict__  # a path is whatever a client typed


def test_probes_are_logged_at_debug(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "smartseg.api.access"):
        client.get("/healthz")
    assert access_lines(caplog) == []
    with caplog.at_level(logging.DEBUG, "smartseg.api.access"):
        client.get("/healthz")
    assert [line.levelno for line in access_lines(caplog)] == [logging.DEBUG]


def test_the_app_names_its_own_routes_and_keeps_metrics_out_of_its_openapi_document() -> None:
    # Building the app connects to nothing, and none of these requests needs Redis.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", s3_endpoint="http://127.0.0.1:9")
    app = create_app(settings.updated(max_request_bytes=2048))
    assert "/metrics" not in app.openapi()["paths"] and "/healthz" in app.openapi()["paths"]
    cases = [
        ("GET", "/healthz", {}, "/healthz", 200),
        ("GET", f"/v1/segmentations/{JOB}", {}, "/v1/segmentations/{job_id}", 401),
        ("POST", "/v1/segmentations", {"content": b"x" * 4096}, "/v1/segmentations", 413),  # before routing
        ("GET", "/static/playground/app.js", {}, "/static/{path}", 200),  # a mount's
        ("GET", f"/v2/{JOB}", {}, UNMATCHED, 404),
    ]
    with TestClient(app) as test_client:
        for method, path, body, route, status in cases:
            before = requests_counted(method, route, status)
            assert test_client.request(method, path, **body).status_code == status
            assert requests_counted(method, route, status) == before + 1, path
