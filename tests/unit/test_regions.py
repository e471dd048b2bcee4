"""Region summaries and the local worker probe, from heartbeats and queue lengths (fakeredis)."""

from __future__ import annotations

import json
import time

import fakeredis

from shared.keys import BATCH, INTERACTIVE, Keys
from shared.regions import least_loaded_first, local_worker_is_live, region_summaries

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


def test_least_loaded_first_orders_by_queued_work_per_worker_then_name() -> None:
    loads = {"us-east": 4 / 2, "eu-west": 3 / 1, "ap-south": 2 / 1, "sa-east": 0 / 3}
    assert least_loaded_first(loads) == ["sa-east", "ap-south", "us-east", "eu-west"]
    assert least_loaded_first({}) == []


def test_the_router_only_sends_work_where_its_pipeline_is_served() -> None:
    from worker.router import _by_load, _least_loaded

    def summary(queued: int, workers: int, pipelines: list[str]) -> dict[str, object]:
        return {
            "queued_interactive": queued,
            "queued_batch": 0,
            "live_workers": workers,
            "pipelines": pipelines,
        }

    healthy = {"eu-west": summary(0, 1, ["lite"]), "ap-south": summary(5, 1, ["lite", "sam3"])}
    assert _by_load(healthy) == ["eu-west", "ap-south"]
    assert _least_loaded(healthy, "sam3") == "ap-south"  # busier, but the only one serving it
    assert _least_loaded(healthy, "grounded-sam") is None  # it waits


def test_an_owed_message_goes_where_its_pipeline_is_served_or_waits() -> None:
    from shared.jobstore import JobStore
    from worker.router import _destination

    store = JobStore(fakeredis.FakeRedis(decode_responses=True), KEYS, 3600, 600, 1)

    def job(pipeline: str, policy: str = "prefer", region: str = "us-east"):  # type: ignore[no-untyped-def]
        request = {
            "image_url": "x",
            "prompts": ["a"],
            "region_policy": policy,
            "options": {"pipeline": pipeline},
        }
        return store.create(
            owner="o", request=request, region=region, priority=INTERACTIVE, filename_stem="a"
        )[0]

    def summary(pipelines: list[str]) -> dict[str, object]:
        return {"queued_interactive": 0, "queued_batch": 0, "live_workers": 1, "pipelines": pipelines}

    healthy = {"us-east": summary(["lite"]), "eu-west": summary(["lite", "sam3"])}
    assert _destination(job("lite"), healthy) == "us-east"  # its own region serves it
    assert _destination(job("sam3"), healthy) == "eu-west"  # the one that does
    assert _destination(job("sam3", "require"), healthy) is None  # pinned, not served there: it waits
    assert _destination(job("grounded-sam"), healthy) is None  # served nowhere: waits, no bouncing
    assert _destination(job("grounded-sam", region="ap-south"), healthy) == "ap-south"  # dead: its queue
    assert _destination(job("sam3", "require", "ap-south"), healthy) == "ap-south"
