"""A worker's heartbeat: a Redis key with a TTL, renewed in a thread. A region is alive while one exists."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from smartseg.shared.keys import Keys

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        worker_id: str,
        region: str,
        pipelines: list[str],
        interval_s: float,
        ttl_s: float,
        device: str = "cpu",
        versions: dict[str, str] | None = None,
        status: Callable[[], dict[str, Any]] = lambda: {},
    ) -> None:
        self.client = client
        self.key = keys.heartbeat(region, worker_id)
        self.region_beats = keys.region_beats()
        self.region = region
        self.info = {
            "worker_id": worker_id,
            "region": region,
            "pipelines": pipelines,
            "device": device,
            "versions": versions or {},
            "started_at": time.time(),
        }
        self.status = status  # what changes between beats: busy or idle, the current job
        self.interval_s = interval_s
        self.ttl_ms = int(ttl_s * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s * 2)
        try:
            self.client.delete(self.key)
        except redis.RedisError as exc:
            log.warning("could not remove heartbeat %s: %s", self.key, exc)

    def beat(self) -> None:
        now = time.time()
        pipe = self.client.pipeline(transaction=False)  # one round trip for both writes
        pipe.set(self.key, json.dumps({**self.info, **self.status(), "beat_at": now}), px=self.ttl_ms)
        pipe.hset(self.region_beats, self.region, now)
        pipe.execute()

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis restarting: keep trying, the key expires meanwhile
                log.warning("heartbeat failed: %s", exc)
