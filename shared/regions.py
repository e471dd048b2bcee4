"""Region state as the heartbeats and queues in Redis tell it, and the one rule for where work goes.

Placement (at submit) and the router (moving a dead region's work) both read ``RegionState`` and pick
with ``least_loaded``: the healthy region serving the pipeline with the least queued work per live worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from smartseg.shared.keys import PRIORITIES, Keys
from smartseg.shared.queues import Queues


@dataclass
class RegionState:
    """One region: its live workers (from heartbeats) and its queued messages per priority."""

    region: str
    live_workers: int = 0
    busy_workers: int = 0
    pipelines: set[str] = field(default_factory=set)
    queued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    last_beat_at: float | None = None  # of any of its workers, heartbeat or not still alive
    held_jobs: int = 0  # claimed by its workers and not ended, those they hold ahead of the model included

    @property
    def healthy(self) -> bool:
        return self.live_workers > 0

    @property
    def load(self) -> float:
        """Queued messages and held jobs per live worker: what the least-loaded rule compares. A worker
        with jobs ahead has taken their messages off the queue, so the queue alone would under-count."""
        work = sum(self.queued.values()) + self.held_jobs
        return work / self.live_workers if self.live_workers else float("inf")

    def serves(self, pipeline: str | None) -> bool:
        """Whether a live worker here runs ``pipeline`` (None: any job)."""
        return self.healthy and (pipeline is None or pipeline in self.pipelines)

    def add_beat(self, beat: dict[str, Any]) -> None:
        self.live_workers += 1
        self.busy_workers += bool(beat.get("busy"))
        self.held_jobs += int(beat.get("jobs", bool(beat.get("busy"))))  # beats from before `jobs`
        self.pipelines.update(beat.get("pipelines", []))


def least_loaded_first(states: Iterable[RegionState], pipeline: str | None = None) -> list[RegionState]:
    """The regions serving ``pipeline`` (None: any), least queued work per live worker first (ties: by
    name). The one rule for where work goes."""
    return sorted((state for state in states if state.serves(pipeline)), key=lambda s: (s.load, s.region))


def least_loaded(states: Iterable[RegionState], pipeline: str | None = None) -> RegionState | None:
    return next(iter(least_loaded_first(states, pipeline)), None)


def workers_by_region(beats: Iterable[dict[str, Any]]) -> dict[str, RegionState]:
    """Regions with live workers, from their heartbeats (queue lengths not read)."""
    states: dict[str, RegionState] = {}
    for beat in beats:
        region = beat["region"]
        states.setdefault(region, RegionState(region)).add_beat(beat)
    return states


def live_workers(client: redis.Redis, keys: Keys, region: str | None = None) -> list[dict[str, Any]]:
    """The heartbeats of a region's live workers, or every region's (a heartbeat key exists only while
    it is renewed)."""
    pattern = keys.every_heartbeat_pattern() if region is None else keys.heartbeat_pattern(region)
    found = []
    for key in client.scan_iter(match=pattern, count=100):
        value = client.get(key)
        if value:
            found.append(json.loads(value))
    return found


def region_states(client: redis.Redis, keys: Keys, regions: list[str]) -> list[RegionState]:
    """Every configured region, in order: workers, queued messages, time of the last beat."""
    by_region = workers_by_region(live_workers(client, keys))
    last_beats = client.hgetall(keys.region_beats())
    queues = Queues(client, keys)
    states = []
    for region in regions:
        state = by_region.get(region, RegionState(region))
        state.queued = {priority: queues.length(region, priority) for priority in PRIORITIES}
        beat_at = last_beats.get(region)
        state.last_beat_at = None if beat_at is None else float(beat_at)
        states.append(state)
    return states


def seconds_since(at: float | None) -> float | None:
    return None if at is None else round(max(0.0, time.time() - at), 3)


def local_worker_is_live(client: redis.Redis, keys: Keys, region: str, hostname: str, ttl_s: float) -> bool:
    """Whether a worker of this host in ``region`` beat within the heartbeat TTL (container probes)."""
    now = time.time()
    for beat in live_workers(client, keys, region):
        if (
            # Worker ids are region-host-pid: the whole host, so host `web` is not `web-2`.
            str(beat.get("worker_id", "")).rsplit("-", 1)[0] == f"{region}-{hostname}"
            and now - beat["beat_at"] <= ttl_s
        ):
            return True
    return False
