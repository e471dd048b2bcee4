"""Region summaries and the local worker probe, from heartbeats and queue lengths (fakeredis)."""

from __future__ import annotations

import json
import time

import fakeredis

from shared.keys import BATCH, INTERACTIVE, Keys
from shared.regions import local_worker_is_live, region_summaries

KEYS = Keys("t")


def beat(client: fakeredis.FakeRedis, region: str, worker: str, busy: bool, age_s: float = 0.0) -> None:
    info = {
        "worker_id": worker,
        "region": region,
        "pipelines": ["lite"],
        "busy": busy,
        "beat_at": time.time() - age_s,
    }
    client.set(KEYS.heartbeat(region, worker), json.dumps(info), px=3000)
    client.hset(KEYS.region_beats(), region, info["beat_at"])


def test_region_summaries_count_workers_queues_and_beats() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    beat(client, "us-east", "us-east-host-1", busy=True)
    beat(client, "us-east", "us-east-host-2", busy=False)
    client.rpush(KEYS.queue("us-east", INTERACTIVE), "m1", "m2")
    client.rpush(KEYS.queue("us-east", BATCH), "m3")
    client.hset(KEYS.region_beats(), "eu-west", time.time() - 5)  # its workers' keys have expired
    east, west, south = region_summaries(client, KEYS, ["us-east", "eu-west", "ap-south"])
    assert {
        k: east[k] for k in ("healthy", "live_workers", "queued_interactive", "queued_batch", "running")
    } == {
        "healthy": True,
        "live_workers": 2,
        "queued_interactive": 2,
        "queued_batch": 1,
        "running": 1,
    }
    assert east["seconds_since_last_beat"] < 1 and east["pipelines"] == ["lite"]
    assert (west["healthy"], west["live_workers"]) == (False, 0)
    assert 4.9 <= west["seconds_since_last_beat"] < 6
    assert (south["healthy"], south["seconds_since_last_beat"]) == (False, None)


def test_local_worker_probe_wants_a_fresh_beat_from_this_host() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-other-7", busy=False)
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-host-9", busy=False, age_s=10)  # a stalled beat thread
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-host-9", busy=False)
    assert local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
