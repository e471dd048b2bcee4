"""Region health as the heartbeats in Redis tell it."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from shared.keys import BATCH, INTERACTIVE, Keys
from shared.queues import Queues


def live_workers(client: redis.Redis, keys: Keys, region: str) -> list[dict[str, Any]]:
    """The heartbeats of a region's live workers (a heartbeat key exists only while it is renewed)."""
    found = []
    for key in client.scan_iter(match=keys.heartbeat_pattern(region), count=100):
        value = client.get(key)
        if value:
            found.append(json.loads(value))
    return found


def region_summaries(client: redis.Redis, keys: Keys, regions: list[str]) -> list[dict[str, Any]]:
    """Per region: healthy (a live worker), live workers, queued interactive/batch, running, last beat."""
    now = time.time()
    last_beats = client.hgetall(keys.region_beats())
    queues = Queues(client, keys)
    summaries = []
    for region in regions:
        workers = live_workers(client, keys, region)
        last_beat = last_beats.get(region)
        summaries.append(
            {
                "region": region,
                "healthy": bool(workers),
                "live_workers": len(workers),
                "queued_interactive": queues.length(region, INTERACTIVE),
                "queued_batch": queues.length(region, BATCH),
                "running": sum(1 for worker in workers if worker.get("busy")),
                "seconds_since_last_beat": None
                if last_beat is None
                else round(max(0.0, now - float(last_beat)), 3),
                "pipelines": sorted({name for worker in workers for name in worker.get("pipelines", [])}),
            }
        )
    return summaries


def least_loaded_first(queued_per_worker: dict[str, float]) -> list[str]:
    """Region names ordered by queued work per live worker, least first (ties: by name). The one rule
    for where work goes: the API's placement and the router's moves both follow it."""
    return sorted(queued_per_worker, key=lambda name: (queued_per_worker[name], name))


def local_worker_is_live(client: redis.Redis, keys: Keys, region: str, hostname: str, ttl_s: float) -> bool:
    """Whether a worker of this host in ``region`` beat within the heartbeat TTL (container probes)."""
    now = time.time()
    for beat in live_workers(client, keys, region):
        if (
            str(beat.get("worker_id", "")).startswith(f"{region}-{hostname}-")
            and now - beat["beat_at"] <= ttl_s
        ):
            return True
    return False
