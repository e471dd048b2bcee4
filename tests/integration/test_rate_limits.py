"""Rate limits per key on a real Redis, through the real app: each budget is a token bucket; over it is a
429 with Retry-After and the RateLimit headers, and the other budgets are untouched."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.integration
BURST = 3
KEY = "sk-limited"
OTHER_KEY = "sk-unlimited-neighbour"


@pytest.fixture
def client(service_settings: Settings) -> Iterator[TestClient]:
    settings = service_settings.updated(
        key_prefix=f"limits-{secrets.token_hex(4)}",
        api_key_hashes=[hash_api_key(KEY), hash_api_key(OTHER_KEY)],
        rate_limit_per_s=0.001,  # one token in 1,000 s: nothing refills while the test runs
        rate_limit_burst=BURST,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_reads_are_refused_past_the_burst_with_when_to_come_back(client: TestClient) -> None:
    assert [client.get("/v1/segmentations", headers=auth()).status_code for _ in range(BURST)] == [
        200
    ] * BURST
    refused = client.get("/v1/segmentations", headers=auth())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 999  # a token comes back in 1,000 s
    assert refused.headers["RateLimit-Policy"] == f'"requests";q={BURST};w=3000'
    assert refused.headers["RateLimit"].startswith('"requests";r=0;t=')
    # Another key has its own budget; probes need none.
    assert client.get("/v1/segmentations", headers=auth(OTHER_KEY)).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_batch_submits_cannot_spend_the_interactive_budget(client: TestClient) -> None:
    body = {"image_url": "https://images.example.com/x.png", "prompt": "red shape"}

    def submit(priority: str) -> int:
        return client.post(
            "/v1/segmentations", json={**body, "priority": priority}, headers=auth()
        ).status_code

    assert [submit("batch") for _ in range(BURST + 1)] == [202] * BURST + [429]  # the backfill is throttled
    assert submit("interactive") == 202  # and interactive submits still go through
    assert client.get("/v1/segmentations", headers=auth()).status_code == 200  # so do reads
    assert (
        len(client.get("/v1/segmentations", headers=auth()).json()["data"]) == BURST + 1
    )  # no job for a 429


def test_a_key_at_its_cap_of_active_jobs_gets_429_too_many_jobs(service_settings: Settings) -> None:
    settings = service_settings.updated(
        key_prefix=f"active-{secrets.token_hex(4)}", api_key_hashes=[hash_api_key(KEY)], max_active_jobs=2
    )
    body = {"image_url": "https://images.example.com/x.png", "prompt": "red shape"}
    with TestClient(create_app(settings)) as client:  # no worker: the jobs stay queued
        submitted = [client.post("/v1/segmentations", json=body, headers=auth()) for _ in range(2)]
        assert [response.status_code for response in submitted] == [202, 202]
        refused = client.post("/v1/segmentations", json=body, headers=auth())
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_jobs")
        assert (
            refused.headers["Retry-After"] == "1"
            and refused.headers["RateLimit-Policy"] == '"active-jobs";q=2'
        )
        first = client.get("/v1/segmentations", headers=auth()).json()["data"][-1]["id"]
        assert client.post(f"/v1/segmentations/{first}/cancel", headers=auth()).status_code == 200
        assert client.post("/v1/segmentations", json=body, headers=auth()).status_code == 202  # a slot freed
