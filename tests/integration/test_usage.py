"""Billing through the real app on a real Redis: amounts are exact decimal strings, a run that found
nothing is not billed (and says why), and ``GET /v1/usage`` gives the owner's runs and amount by UTC day."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobStore
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.integration
KEY = "sk-usage"
OWNER = hash_api_key(KEY)[:16]  # what a bootstrap key's owner is (api/auth.py)
PRICE = Decimal("0.37")


@pytest.fixture
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(
        key_prefix=f"usage-{secrets.token_hex(4)}", api_key_hashes=[hash_api_key(KEY)], price_usd=PRICE
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_job(store: JobStore, found: bool) -> str:
    """A job created, claimed and ended the way a worker does it."""
    spec = JobSpec(image_url="https://images.example.com/x.png", prompts=("red circle",), pipeline="lite")
    job, _ = store.create(owner=OWNER, spec=spec, region="us-east", filename_stem="x")
    store.claim(job.id, job.token, "w1", 30)
    result = {"prompt": "red circle", "result": "match" if found else "no_match", "masks": int(found)}
    store.succeed(job, job.token, outputs=[], prompt_results=[result], metrics={})
    return job.id


def test_usage_counts_billed_runs_by_day_in_exact_amounts(settings: Settings, client: TestClient) -> None:
    store = JobStore.from_settings(settings)
    billed = [run_job(store, found=True) for _ in range(3)]
    nothing = run_job(store, found=False)
    auth = {"Authorization": f"Bearer {KEY}"}

    job = client.get(f"/v1/segmentations/{billed[0]}", headers=auth).json()
    assert job["billing"] == {"billed": True, "amount_usd": "0.37", "currency": "USD", "reason": "succeeded"}
    job = client.get(f"/v1/segmentations/{nothing}", headers=auth).json()
    assert job["billing"] == {"billed": False, "amount_usd": "0", "currency": "USD", "reason": "no_match"}

    today = datetime.now(UTC).date()
    usage = client.get("/v1/usage", headers=auth).json()
    assert usage == {
        "from": (today - timedelta(days=29)).isoformat(),
        "to": today.isoformat(),
        "runs": 3,
        "amount_usd": "1.11",  # 3 x 0.37 exactly: 1.1099999999999999 in floats
        "currency": "USD",
        "days": None,
    }
    yesterday = (today - timedelta(days=1)).isoformat()
    by_day = client.get(f"/v1/usage?from={yesterday}&group_by=day", headers=auth).json()
    assert by_day["days"] == [
        {"date": yesterday, "runs": 0, "amount_usd": "0"},
        {"date": today.isoformat(), "runs": 3, "amount_usd": "1.11"},
    ]
    store.close()


@pytest.mark.parametrize(
    "query", ["from=2026-13-01", "from=2026-02-30", "to=2026-01-01T00:00:00", "from=0", "group_by=week"]
)
def test_bad_spans_are_refused_with_invalid_request(client: TestClient, query: str) -> None:
    response = client.get(f"/v1/usage?{query}", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_any_span_is_answered_and_reads_only_days_that_can_hold_figures(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    backwards = client.get("/v1/usage?from=2026-01-02&to=2026-01-01&group_by=day", headers=auth).json()
    assert (backwards["runs"], backwards["amount_usd"], backwards["days"]) == (0, "0", [])
    # Ten thousand years: only the kept days (SMARTSEG_USAGE_RETENTION_DAYS, 400) up to today are listed.
    every = client.get("/v1/usage?from=0001-01-01&to=9999-12-31&group_by=day", headers=auth).json()
    assert (every["from"], every["to"]) == ("0001-01-01", "9999-12-31") and len(every["days"]) == 400
    assert every["days"][-1]["date"] == datetime.now(UTC).date().isoformat()
    first = client.get("/v1/usage?to=0001-01-05", headers=auth).json()
    assert (first["from"], first["to"], first["runs"]) == ("0001-01-01", "0001-01-05", 0)
