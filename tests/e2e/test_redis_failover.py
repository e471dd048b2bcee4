"""Chaos: the Redis primary is SIGKILLed under a steady submit load. Real processes: a Valkey primary,
a replica and three Sentinels; the API, the router, the deliverer and two regions' workers pointed at
the Sentinels, with acknowledged writes (a 202 means a replica holds the job). The Sentinels promote the
replica, every client follows it, and every job that got a 202 ends exactly once, billed once."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings
from smartseg.testing.redis_sentinel import SentinelCluster, sentinel_cluster
from tests.e2e.chaos import fast_and_slow_image_urls

pytestmark = pytest.mark.e2e
BEFORE_KILL_S = 4.0  # of submits before the primary dies
ACCEPTED_AFTER_KILL = 30  # submits go on until this many more were accepted
AFTER_KILL_TIMEOUT_S = 60.0  # or this long (an election that split is tried again after 6 s)
SUBMIT_EVERY_S = 0.1
DONE_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    with sentinel_cluster(replicas=2) as started:  # one left to confirm writes once the primary is gone
        yield started


def test_a_primary_killed_under_load_loses_no_accepted_job(
    cluster: SentinelCluster, service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    api_key = f"sk-sentinel-{secrets.token_hex(8)}"
    settings = service_settings.updated(
        redis_url=cluster.url,
        key_prefix=f"sentinel-{secrets.token_hex(4)}",
        regions=["us-east", "eu-west"],
        api_key_hashes=[hash_api_key(api_key)],
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
        api_port=0,
        lease_s=5.0,
        redis_timeout_s=1.0,
        redis_ack_replicas=1,
        redis_ack_timeout_ms=500,
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    with fast_and_slow_image_urls(seed=80, slow_fetch_s=0.5) as (fast, _):
        stack = Stack(settings, Path(tmp_path_factory.mktemp("sentinel"))).start()
        try:
            accepted: list[str] = []
            refused: list[int] = []

            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as api:
                    while not stop.is_set():
                        try:
                            answer = api.post(
                                "/v1/segmentations", json={"image_url": fast, "prompt": "largest shape"}
                            )
                        except httpx.HTTPError:
                            refused.append(0)
                        else:
                            if answer.status_code == 202:
                                accepted.append(answer.json()["id"])
                            else:
                                refused.append(answer.status_code)
                        stop.wait(SUBMIT_EVERY_S)

            submitter = threading.Thread(target=load)
            submitter.start()
            time.sleep(BEFORE_KILL_S)
            before_kill = len(accepted)
            os.kill(cluster.primary_pid, signal.SIGKILL)
            deadline = time.monotonic() + AFTER_KILL_TIMEOUT_S
            while len(accepted) < before_kill + ACCEPTED_AFTER_KILL and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            submitter.join()
            assert before_kill > 0 and len(accepted) > before_kill  # submits were accepted again after
            assert set(refused) <= {0, 503}, refused  # while there was no primary: 503, never a 500

            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as api:
                deadline = time.monotonic() + DONE_TIMEOUT_S
                ended: dict[str, dict[str, object]] = {}
                while len(ended) < len(accepted):
                    assert time.monotonic() < deadline, f"{len(accepted) - len(ended)} jobs never ended"
                    for job_id in accepted:
                        if job_id in ended:
                            continue
                        answer = api.get(f"/v1/segmentations/{job_id}")
                        assert answer.status_code != 404, f"an accepted job was lost: {job_id}"
                        job = answer.json()
                        if answer.status_code == 200 and job["status"] in ("succeeded", "failed", "canceled"):
                            ended[job_id] = job
                    time.sleep(0.5)
                usage = api.get("/v1/usage").json()
            assert {job["status"] for job in ended.values()} == {"succeeded"}
            billable = sum(1 for job in ended.values() if job["result"] == "match")
            assert usage["runs"] == billable  # each billed once, none twice, none lost
        finally:
            stack.stop()
