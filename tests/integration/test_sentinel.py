"""Redis through Sentinel, with real Valkey processes: a primary, a replica and three Sentinels (the
embedded `valkey-server` binary with `--sentinel`). The service's clients (sync, async and the Celery
broker) find the master from a `redis+sentinel://` URL, and follow the promoted replica once the primary
is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from smartseg.shared.celery_app import make_celery, send_job
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobStore
from smartseg.shared.keys import INTERACTIVE
from smartseg.shared.queues import Queues
from smartseg.shared.redis_address import sentinel_address
from smartseg.shared.redis_connection import async_redis_client, redis_client
from smartseg.shared.settings import Settings
from smartseg.testing.redis_sentinel import SentinelCluster, sentinel_cluster

pytestmark = pytest.mark.integration
FAILOVER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    with sentinel_cluster() as started:
        yield started


def test_the_address_parses() -> None:
    address = sentinel_address("redis+sentinel://:p%40ss@a:1,b:2,c/main/3")
    assert address is not None
    assert (address.sentinels, address.master, address.db, address.password) == (
        [("a", 1), ("b", 2), ("c", 26379)],
        "main",
        3,
        "p@ss",
    )
    assert address.kombu_url() == "sentinel://:p@ss@a:1/3;sentinel://:p@ss@b:2/3;sentinel://:p@ss@c:26379/3"
    assert sentinel_address("redis://localhost:6379/0") is None


def test_clients_follow_the_master_through_a_failover(cluster: SentinelCluster) -> None:
    url = cluster.url
    client = redis_client(url, 1.0)
    client.set("before", "1")
    settings = Settings(redis_url=url, key_prefix="sentinel-test", regions=["us-east"], redis_timeout_s=1.0)
    store = JobStore.from_settings(settings, client)
    spec = JobSpec(image_url="https://images.invalid/x.png", prompts=("x",), pipeline="lite")
    job, _ = store.create(owner="o", spec=spec, region="us-east", filename_stem="a")
    celery = make_celery(settings)
    send_job(celery, job)  # through kombu's sentinel transport
    assert Queues(client, store.keys).length("us-east", INTERACTIVE) == 1

    os.kill(cluster.primary_pid, signal.SIGKILL)
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while True:  # until a Sentinel names the replica and the client writes there
        try:
            client.set("after", "2")
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.5)
    assert client.get("before") == "1" and store.get(job.id) is not None  # replicated before the kill
    send_job(celery, job)
    assert Queues(client, store.keys).length("us-east", INTERACTIVE) == 2

    async def through_the_async_client() -> str | None:
        async_client = async_redis_client(url, 1.0)
        try:
            value: str | None = await async_client.get("after")
            return value
        finally:
            await async_client.aclose()

    assert asyncio.run(through_the_async_client()) == "2"
