"""Region states, the least-loaded rule, the router's destinations and the local worker probe, from
heartbeats and queue lengths (fakeredis)."""

from __future__ import annotations

import json
import time

import fakeredis

from smartseg.shared.jobspec import JobSpec, RegionPolicy
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.keys import BATCH, INTERACTIVE, Keys
from smartseg.shared.regions import (
    RegionState,
    least_loaded,
    least_loaded_first,
    local_worker_is_live,
    region_states,
    seconds_since,
)
from smartseg.worker.router import destination

KEYS = Keys("t")


def beat(
    client: fakeredis.FakeRedis, region: str, worker: str, busy: bool, age_s: float = 0.0, jobs: int = 0
) -> None:
    info = {
        "worker_id": worker,
        "region": region,
        "pipelines": ["lite"],
        "busy": busy,
        "jobs": jobs,
        "beat_at": time.time() - age_s,
    }
    client.set(KEYS.heartbeat(region, worker), json.dumps(info), px=3000)
    client.hset(KEYS.region_beats(), region, info["beat_at"])


def test_region_states_count_workers_queues_and_beats() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    beat(client, "us-east", "us-east-host-1", busy=True, jobs=3)  # one on its model, two held ahead
    beat(client, "us-east", "us-east-host-2", busy=False)
    client.rpush(KEYS.queue("us-east", INTERACTIVE), "m1", "m2")
    client.rpush(KEYS.queue("us-east", BATCH), "m3")
    client.hset(KEYS.region_beats(), "eu-west", time.time() - 5)  # its workers' keys have expired
    east, west, south = region_states(client, KEYS, ["us-east", "eu-west", "ap-south"])
    assert (east.healthy, east.live_workers, east.busy_workers, east.held_jobs) == (True, 2, 1, 3)
    # Queued messages and held jobs per live worker: the held ones left the queue, they are still work.
    assert east.queued == {INTERACTIVE: 2, BATCH: 1} and east.load == (3 + 3) / 2
    assert seconds_since(east.last_beat_at) < 1 and east.pipelines == {"lite"}
    assert (west.healthy, west.live_workers, west.load) == (False, 0, float("inf"))
    assert 4.9 <= seconds_since(west.last_beat_at) < 6
    assert (south.healthy, south.last_beat_at, seconds_since(south.last_beat_at)) == (False, None, None)


def test_local_worker_probe_wants_a_fresh_beat_from_this_host() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-other-7", busy=False)
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-host-2-8", busy=False)  # host `host-2`, whose name starts like ours
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-host-9", busy=False, age_s=10)  # a stalled beat thread
    assert not local_worker_is_live(client, KEYS, "us-east", "host", 3.0)
    beat(client, "us-east", "us-east-host-9", busy=False)
    assert local_worker_is_live(client, KEYS, "us-east", "host", 3.0)


def state(region: str, queued: int, workers: int, pipelines: set[str] | None = None) -> RegionState:
    return RegionState(region, workers, 0, pipelines or {"lite"}, {INTERACTIVE: queued, BATCH: 0})


def test_least_loaded_first_orders_by_queued_work_per_worker_then_name() -> None:
    states = [state("us-east", 4, 2), state("eu-west", 3, 1), state("ap-south", 2, 1), state("sa-east", 0, 3)]
    assert [s.region for s in least_loaded_first(states)] == ["sa-east", "ap-south", "us-east", "eu-west"]
    assert least_loaded_first([]) == []
    assert least_loaded_first([state("dead", 0, 0)]) == []  # no live worker: never a target


def test_work_only_goes_where_its_pipeline_is_served() -> None:
    states = [state("eu-west", 0, 1), state("ap-south", 5, 1, {"lite", "sam3"})]
    assert [s.region for s in least_loaded_first(states)] == ["eu-west", "ap-south"]
    assert least_loaded(states, "sam3") is states[1]  # busier, but the only one serving it
    assert least_loaded(states, "grounded-sam") is None  # it waits


def test_an_owed_message_goes_where_its_pipeline_is_served_or_waits() -> None:
    store = JobStore(fakeredis.FakeRedis(decode_responses=True), KEYS, 3600, 1)

    def job(pipeline: str, policy: RegionPolicy = "prefer", region: str = "us-east") -> JobRecord:
        spec = JobSpec(image_url="x", prompts=("a",), pipeline=pipeline, region_policy=policy)
        return store.create(owner="o", spec=spec, region=region, filename_stem="a")[0]

    healthy = {"us-east": state("us-east", 0, 1), "eu-west": state("eu-west", 0, 1, {"lite", "sam3"})}
    assert destination(job("lite"), healthy) == "us-east"  # its own region serves it
    assert destination(job("sam3"), healthy) == "eu-west"  # the one that does
    assert destination(job("sam3", "require"), healthy) is None  # pinned, not served there: it waits
    assert destination(job("grounded-sam"), healthy) is None  # served nowhere: waits, no bouncing
    assert destination(job("grounded-sam", region="ap-south"), healthy) == "ap-south"  # dead: its queue
    assert destination(job("sam3", "require", "ap-south"), healthy) == "ap-south"
