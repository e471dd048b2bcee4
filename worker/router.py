"""``python -m worker.router``: moves the queued work of dead regions to healthy ones.

One copy is active at a time: it holds a Redis lock with a TTL and renews it every tick; other copies
stand by and take over once the holder stops renewing (it died), within the lock's TTL.
Every ~0.5 s the active copy reads region health from the heartbeats and, for each region without a live
worker, moves its queued messages (interactive, then batch) to the healthy region with the least queued
work per live worker. Jobs pinned to their region stay. A message that moves twice, or that a dead worker's
restore brings back, is harmless: the fenced claim runs each job once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any

import redis

from shared.keys import BATCH, INTERACTIVE, Keys
from shared.queues import Queues
from shared.regions import region_summaries
from shared.settings import Settings

log = logging.getLogger(__name__)

TICK_S = 0.5
LOCK_TTL_S = 3.0

# Renew only a lock we hold: a router that stalled past the TTL must not extend a successor's lock.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RouterLock:
    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_s: float = LOCK_TTL_S) -> None:
        self.client = client
        self.key = key
        self.holder = holder
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = client.register_script(_RENEW)

    def hold(self) -> bool:
        """Take the lock if it is free, or renew it if it is ours; False while another copy holds it."""
        if self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        if self.client.get(self.key) == self.holder:
            self.client.delete(self.key)


@dataclass(frozen=True)
class Move:
    source: str
    target: str
    priority: str
    messages: int


class Router:
    def __init__(self, client: redis.Redis, keys: Keys, regions: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.regions = regions
        self.queues = Queues(client, keys)

    def tick(self) -> list[Move]:
        summaries = region_summaries(self.client, self.keys, self.regions)
        healthy = {s["region"]: s for s in summaries if s["healthy"]}
        if not healthy:
            return []  # nowhere to go: the work waits until a region is back
        moves = []
        for summary in summaries:
            if summary["healthy"]:
                continue
            for priority, queued in (
                (INTERACTIVE, summary["queued_interactive"]),
                (BATCH, summary["queued_batch"]),
            ):
                if not queued:
                    continue
                target = min(healthy, key=lambda name: (_load(healthy[name]), name))
                moved = self.queues.move(summary["region"], target, priority)
                if moved:
                    healthy[target][f"queued_{priority}"] += moved
                    moves.append(Move(summary["region"], target, priority, moved))
                    log.warning(
                        "moved %d %s messages from %s to %s", moved, priority, summary["region"], target
                    )
        return moves


def _load(summary: dict[str, Any]) -> float:
    return (summary["queued_interactive"] + summary["queued_batch"]) / summary["live_workers"]


def run(settings: Settings, stop: threading.Event) -> None:
    client = redis.Redis.from_url(
        settings.require_redis_url(), decode_responses=True, health_check_interval=10
    )
    keys = Keys(settings.key_prefix)
    lock = RouterLock(client, keys.router_lock(), f"{socket.gethostname()}-{os.getpid()}")
    router = Router(client, keys, settings.regions)
    active = False
    try:
        while not stop.is_set():
            try:
                holding = lock.hold()
                if holding != active:
                    log.warning("router %s", "active" if holding else "standing by")
                    active = holding
                if holding:
                    router.tick()
            except redis.RedisError as exc:  # Redis restarting: keep trying
                log.warning("router tick failed: %s", exc)
            stop.wait(TICK_S)
    finally:
        with contextlib.suppress(redis.RedisError):  # a standby takes over once the lock expires anyway
            lock.release()


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s router %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.warning("router starting for regions %s", ",".join(settings.regions))
    run(settings, stop)


if __name__ == "__main__":
    main()
