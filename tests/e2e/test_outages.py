"""Chaos: the backing services go away for a moment. Real processes, a private Redis, a proxied S3.

Redis restarts with jobs queued and one running: every accepted job completes, billed once, and the
API, the router and the worker carry on without being restarted. S3 stops answering for a few seconds:
uploads retry with backoff, so jobs succeed, or end `failed` with `storage_unavailable` once the retry
budget is spent; none is left `running`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from smartseg.cli.launcher import EmbeddedRedis, Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.keys import Keys
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.settings import Settings
from smartseg.shared.storage import FIRST_RETRY_DELAY_S, MAX_RETRY_DELAY_S
from smartseg.testing.api_client import JsonClient
from smartseg.worker.router import LOCK_TTL_S
from tests.e2e.chaos import billed_runs, fast_and_slow_image_urls, wait_for_status
from tests.e2e.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e
REGION = "us-east"
SLOW_FETCH_S = 0.3
JOB_TIMEOUT_S = 60.0
REDIS_DOWN_S = 1.5  # within the clients' reconnect budget (shared/redis_connection.py)


@pytest.fixture(scope="module")
def image_urls() -> Iterator[tuple[str, str]]:
    with fast_and_slow_image_urls(seed=61, slow_fetch_s=SLOW_FETCH_S) as urls:
        yield urls


def _stack_settings(service_settings: Settings, api_key: str, **overrides: object) -> Settings:
    return service_settings.updated(
        key_prefix=f"outage-{secrets.token_hex(4)}",
        regions=[REGION],
        api_key_hashes=[hash_api_key(api_key)],
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
        api_port=0,
        lease_s=5.0,
        **overrides,
    )


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, str]]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("aof-redis")), appendonly=True)
    url = server.start()
    yield server, url
    server.stop()


def test_a_redis_restart_loses_no_accepted_job(
    private_redis: tuple[EmbeddedRedis, str],
    service_settings: Settings,
    image_urls: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server, url = private_redis
    fast, slow = image_urls
    api_key = f"sk-outage-{secrets.token_hex(8)}"
    settings = _stack_settings(service_settings, api_key, redis_url=url)
    stack = Stack(settings, Path(tmp_path_factory.mktemp("redis-restart"))).start()
    try:
        with JsonClient(stack.api_url, api_key) as client:
            before = [client.create({"image_url": slow, "prompt": "largest shape"}) for _ in range(12)]
            wait_for_status(client, before[0]["id"], "running")
            server.stop()  # a graceful stop flushes the append-only file
            with ThreadPoolExecutor(max_workers=1) as pool:  # a submit while Redis is down waits for it
                during = pool.submit(client.create, {"image_url": fast, "prompt": "largest shape"})
                time.sleep(REDIS_DOWN_S)
                server.start()  # the same port, the same data
                restarted = time.monotonic()
                after = [
                    during.result(),
                    *(client.create({"image_url": fast, "prompt": "largest shape"}) for _ in range(7)),
                ]
            done = [client.wait(job["id"], timeout_s=JOB_TIMEOUT_S) for job in [*before, *after]]
            # Waiting on a job (one shared subscription in the API) works across the restart too.
            waited = client.create({"image_url": fast, "prompt": "largest shape"}, wait_s=30)
        assert [job["status"] for job in done] == ["succeeded"] * 20
        assert waited["status"] == "succeeded"
        assert billed_runs(stack, api_key) == 21  # each job billed once
        processes = [stack.api, stack.router, *stack.workers.values()]
        assert all(process is not None and process.poll() is None for process in processes)
        # The router is not just alive: it still holds its lock, renewed after the restart (the lock's
        # TTL is shorter than the time since), so it is still ticking.
        assert stack.router is not None
        time.sleep(max(0.0, restarted + LOCK_TTL_S + 0.5 - time.monotonic()))
        with redis_client(url) as client:
            holder = client.get(Keys(settings.key_prefix).router_lock())
            ttl_ms = client.pttl(Keys(settings.key_prefix).router_lock())
        assert holder == f"{socket.gethostname()}-{stack.router.pid}" and 0 < ttl_ms <= LOCK_TTL_S * 1000
    finally:
        stack.stop()


REDIS_PAUSED_S = 6.0  # longer than the clients' read timeout (SMARTSEG_REDIS_TIMEOUT_S)
ANSWER_WITHIN_S = 10.0  # a request to an API whose Redis hangs must be answered (503) within this


def test_a_hung_redis_gets_503s_at_once_on_every_endpoint_and_everything_recovers(
    private_redis: tuple[EmbeddedRedis, str],
    service_settings: Settings,
    image_urls: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server, url = private_redis
    fast, _ = image_urls
    api_key = f"sk-paused-{secrets.token_hex(8)}"
    settings = _stack_settings(service_settings, api_key, redis_url=url, redis_timeout_s=1.0)
    stack = Stack(settings, Path(tmp_path_factory.mktemp("redis-paused"))).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with JsonClient(stack.api_url, api_key) as client:
            job = client.create({"image_url": fast, "prompt": "largest shape"}, wait_s=30)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # it accepts connections and answers nothing
        try:
            calls = [
                ("GET", "/readyz", None),
                ("GET", f"/v1/segmentations/{job['id']}", None),
                ("GET", "/v1/segmentations", None),
                ("POST", "/v1/segmentations", {"image_url": fast, "prompt": "largest shape"}),
                ("GET", "/v1/regions", None),
                ("GET", "/v1/usage", None),
            ]
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=ANSWER_WITHIN_S) as api:
                for method, path, body in calls:
                    answer = api.request(method, path, json=body)
                    assert answer.status_code == 503, (path, answer.status_code, answer.text)
                    shown = answer.json()  # /readyz says which part is down; the API, its error code
                    assert (
                        shown == {"status": "unavailable", "redis": "down"}
                        if path == "/readyz"
                        else (shown["error"]["code"] == "service_unavailable")
                    ), (path, shown)
            time.sleep(max(0.0, REDIS_PAUSED_S - 1))
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # Nothing was restarted: the same processes serve again, and a new job runs to the end.
        with JsonClient(stack.api_url, api_key) as client:
            deadline = time.monotonic() + 30
            while httpx.get(f"{stack.api_url}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the API did not recover"
                time.sleep(0.2)
            after = client.create({"image_url": fast, "prompt": "largest shape"}, wait_s=30)
            done = client.wait(after["id"], timeout_s=JOB_TIMEOUT_S)
        assert done["status"] == "succeeded"
        assert all(process.poll() is None for process in [stack.api, stack.router, *stack.workers.values()])
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def proxied_s3_stack(
    service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, TcpProxy, str]]:
    """A stack whose every S3 request goes through a proxy the test can cut."""
    endpoint = urlsplit(service_settings.s3_endpoint)
    proxy = TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
    api_key = f"sk-outage-{secrets.token_hex(8)}"
    settings = _stack_settings(service_settings, api_key, s3_endpoint=f"http://127.0.0.1:{proxy.port}")
    stack = Stack(settings, Path(tmp_path_factory.mktemp("s3-outage"))).start()
    yield stack, proxy, api_key
    stack.stop()
    proxy.close()


def _upload_budget_s(settings: Settings) -> float:
    """How long an upload keeps retrying: the backoff sleeps between its attempts."""
    delays = (FIRST_RETRY_DELAY_S * 2**n for n in range(settings.s3_upload_attempts - 1))
    return sum(min(delay, MAX_RETRY_DELAY_S) for delay in delays)


def test_a_short_s3_outage_is_ridden_out_by_retries(
    proxied_s3_stack: tuple[Stack, TcpProxy, str], image_urls: tuple[str, str]
) -> None:
    stack, proxy, api_key = proxied_s3_stack
    fast, _ = image_urls
    outage_s = _upload_budget_s(stack.settings) / 2  # the first job's last attempts fall after it
    with JsonClient(stack.api_url, api_key) as client:
        with proxy.outage(outage_s):
            jobs = [client.create({"image_url": fast, "prompt": "largest shape"}) for _ in range(5)]
        done = [client.wait(job["id"], timeout_s=JOB_TIMEOUT_S) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded"] * 5
    assert all(job["outputs"] for job in done)
    log = (stack.run_dir / f"worker-{REGION}.log").read_text()
    assert f"upload of jobs/{jobs[0]['id']}/1/" in log  # it did meet the outage, and retried
    with httpx.Client() as http:  # the masks are really there, through the same endpoint
        assert all(http.get(job["outputs"][0]["url"]).status_code == 200 for job in done)


def test_a_long_s3_outage_fails_jobs_with_storage_unavailable_and_leaves_none_running(
    proxied_s3_stack: tuple[Stack, TcpProxy, str], image_urls: tuple[str, str]
) -> None:
    stack, proxy, api_key = proxied_s3_stack
    fast, _ = image_urls
    billed_before = billed_runs(stack, api_key)
    outage_s = _upload_budget_s(stack.settings) * 2  # longer than one job's retries
    with JsonClient(stack.api_url, api_key) as client:
        with proxy.outage(outage_s):
            jobs = [client.create({"image_url": fast, "prompt": "largest shape"}) for _ in range(4)]
        done = [client.wait(job["id"], timeout_s=JOB_TIMEOUT_S) for job in jobs]
        after = client.wait(client.create({"image_url": fast, "prompt": "largest shape"})["id"])
    outcomes = [(job["status"], (job.get("error") or {}).get("code")) for job in done]
    assert outcomes[0] == ("failed", "storage_unavailable")  # its whole retry budget fell in the outage
    assert set(outcomes) <= {("failed", "storage_unavailable"), ("succeeded", None)}
    assert all(not job["outputs"] for job in done if job["status"] == "failed")
    assert after["status"] == "succeeded"  # the service kept serving
    succeeded = sum(job["status"] == "succeeded" for job in [*done, after])
    assert billed_runs(stack, api_key) - billed_before == succeeded  # failures are not billed
