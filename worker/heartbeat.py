"""A worker's heartbeat: a Redis key with a TTL, renewed in a thread. A region is alive while one exists."""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

from shared.keys import Keys

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
    ) -> None:
        self.client = client
        self.key = keys.heartbeat(region, worker_id)
        self.info = {
            "worker_id": worker_id,
            "region": region,
            "pipelines": pipelines,
            "started_at": time.time(),
        }
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
        self.client.set(self.key, json.dumps({**self.info, "beat_at": time.time()}), px=self.ttl_ms)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis restarting: keep trying, the key expires meanwhile
                log.warning("heartbeat failed: %s", exc)
