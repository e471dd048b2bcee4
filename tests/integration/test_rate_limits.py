"""Rate limits per key on a real Redis, through the real app: each budget is a token bucket; over it is a
429 with Retry-After and the RateLimit headers, and the other budgets are untouched. Keys made by
``smartseg keys create`` can have limits of their own; every answer says what is left."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.cli.commands import main
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


@pytest.fixture
def managed(service_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of an app with managed keys only; ``smartseg keys`` points at the same Redis and prefix."""
    settings = service_settings.updated(key_prefix=f"key-limits-{secrets.token_hex(4)}", api_key_hashes=[])
    monkeypatch.setenv("SMARTSEG_REDIS_URL", settings.require_redis_url())
    monkeypatch.setenv("SMARTSEG_KEY_PREFIX", settings.key_prefix)
    return settings


@pytest.fixture
def keys_cli(managed: Settings, capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """``smartseg keys ...``: what it prints on stdout."""

    def run(*argv: str) -> str:
        assert main(["keys", *argv]) == 0, capsys.readouterr().err
        return capsys.readouterr().out.strip()

    return run


def key_id(listing: str, name: str) -> str:
    """The id of the key named ``name`` in ``keys list`` output."""
    return next(line.split()[0] for line in listing.splitlines() if line.endswith(f"  {name}"))


def test_a_key_made_with_its_own_burst_is_held_to_it_and_rotation_keeps_it(
    managed: Settings, keys_cli: Callable[..., str]
) -> None:
    limited = keys_cli("create", "--name", "tight", "--rate-limit-burst", "2")
    plain = keys_cli("create", "--name", "plain")
    limited_id = key_id(keys_cli("list"), "tight")
    rotated = keys_cli("rotate", limited_id)
    listed = keys_cli("list")
    assert key_id(listed, "tight") != limited_id and "rate-limit-burst=2  tight" in listed  # kept the limit
    assert "limits=default  plain" in listed

    # The settings: bursts of BURST, one token in 1,000 s, so nothing refills while the test runs.
    with TestClient(create_app(managed.updated(rate_limit_per_s=0.001, rate_limit_burst=BURST))) as client:
        assert client.get("/v1/segmentations", headers=auth(limited)).status_code == 401  # rotated away
        tight = [client.get("/v1/segmentations", headers=auth(rotated)) for _ in range(3)]
        default = [client.get("/v1/segmentations", headers=auth(plain)) for _ in range(3)]
    assert [response.status_code for response in tight] == [200, 200, 429]
    assert [response.status_code for response in default] == [200, 200, 200]
    # Every answer says what is left of the budget, the 200s too.
    assert [(r.headers["RateLimit-Policy"], r.headers["RateLimit"]) for r in tight] == [
        ('"requests";q=2;w=2000', '"requests";r=1;t=1000'),
        ('"requests";q=2;w=2000', '"requests";r=0;t=2000'),
        ('"requests";q=2;w=2000', f'"requests";r=0;t={tight[2].headers["Retry-After"]}'),
    ]
    assert int(tight[2].headers["Retry-After"]) >= 999 and tight[2].json()["error"]["code"] == "rate_limited"
    assert default[2].headers["RateLimit-Policy"] == f'"requests";q={BURST};w=3000'
    assert default[2].headers["RateLimit"] == '"requests";r=0;t=3000'


def test_a_key_made_with_its_own_cap_of_active_jobs_gets_too_many_jobs_past_it(
    managed: Settings, keys_cli: Callable[..., str]
) -> None:
    capped = keys_cli("create", "--name", "one-at-a-time", "--max-active-jobs", "1")
    plain = keys_cli("create", "--name", "plain")
    capped_id = key_id(keys_cli("list"), "one-at-a-time")
    body = {"image_url": "https://images.example.com/x.png", "prompt": "red shape"}

    def submit(key: str) -> int:
        return client.post("/v1/segmentations", json=body, headers=auth(key)).status_code

    with TestClient(create_app(managed)) as client:  # no worker: the jobs stay queued
        first = client.post("/v1/segmentations", json=body, headers=auth(capped))
        assert first.status_code == 202
        assert first.headers["RateLimit-Policy"] == '"interactive";q=10000;w=1'  # the settings' bucket
        refused = client.post("/v1/segmentations", json=body, headers=auth(capped))
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_jobs")
        assert refused.headers["RateLimit-Policy"] == '"active-jobs";q=1'
        assert refused.json()["error"]["details"] == {"active_jobs": 1, "max_active_jobs": 1}
        assert [submit(plain) for _ in range(2)] == [202, 202]  # the settings' cap (1000)

        # `keys update` changes the cap from the key's next request on; `default` gives it the setting's.
        assert keys_cli("update", capped_id, "--max-active-jobs", "2").endswith("max-active-jobs=2")
        assert [submit(capped), submit(capped)] == [202, 429]
        assert keys_cli("update", capped_id, "--max-active-jobs", "default").endswith("limits=default")
        assert submit(capped) == 202
