"""Placement of new jobs from heartbeats and queue lengths (fakeredis)."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import pytest

from smartseg.api.placement import Placement
from smartseg.shared.errors import UnknownPipeline
from smartseg.shared.keys import BATCH, INTERACTIVE, Keys

KEYS = Keys("t")
REGIONS = ["us-east", "eu-west", "ap-south"]


def beat(server: fakeredis.FakeServer, region: str, worker: str, pipelines: list[str]) -> None:
    client = fakeredis.FakeRedis(server=server)
    client.set(
        KEYS.heartbeat(region, worker), json.dumps({"region": region, "pipelines": pipelines}), px=3000
    )


def queue(server: fakeredis.FakeServer, region: str, priority: str, count: int) -> None:
    fakeredis.FakeRedis(server=server).rpush(KEYS.queue(region, priority), *range(count))


def place(server: fakeredis.FakeServer, pipeline: str, region: str, required: bool = False) -> str:
    placement = Placement(
        fakeredis.FakeAsyncRedis(server=server, decode_responses=True), KEYS, REGIONS, ["lite"]
    )
    return asyncio.run(placement.place(pipeline, region, required))


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def test_with_no_live_worker_jobs_queue_where_asked(server: fakeredis.FakeServer) -> None:
    assert place(server, "lite", "ap-south") == "ap-south"  # starts when a worker is back
    with pytest.raises(UnknownPipeline) as error:
        place(server, "sam3", "us-east")
    assert error.value.status == 422 and error.value.code == "unknown_pipeline"


def test_a_healthy_requested_region_keeps_its_job(server: fakeredis.FakeServer) -> None:
    beat(server, "us-east", "w1", ["lite"])
    beat(server, "eu-west", "w2", ["lite"])
    queue(server, "us-east", INTERACTIVE, 50)
    assert place(server, "lite", "us-east") == "us-east"


def test_an_unhealthy_region_sends_its_job_where_each_worker_has_least_queued(
    server: fakeredis.FakeServer,
) -> None:
    beat(server, "us-east", "w1", ["lite"])
    beat(server, "eu-west", "w2", ["lite"])
    beat(server, "eu-west", "w3", ["lite"])
    queue(server, "us-east", INTERACTIVE, 3)  # 3 per worker
    queue(server, "eu-west", BATCH, 4)  # 2 per worker
    assert place(server, "lite", "ap-south") == "eu-west"
    queue(server, "eu-west", INTERACTIVE, 4)  # now 4 per worker
    assert place(server, "lite", "ap-south") == "us-east"


def test_pipelines_decide_which_regions_can_take_a_job(server: fakeredis.FakeServer) -> None:
    beat(server, "us-east", "w1", ["lite"])
    beat(server, "eu-west", "w2", ["lite", "sam3"])
    assert place(server, "sam3", "us-east") == "eu-west"  # healthy, but it does not serve sam3
    with pytest.raises(UnknownPipeline, match="no worker serves pipeline 'grounded-sam'"):
        place(server, "grounded-sam", "us-east")


def test_a_required_region_is_kept_even_while_it_is_down(server: fakeredis.FakeServer) -> None:
    beat(server, "eu-west", "w2", ["lite", "sam3"])
    beat(server, "us-east", "w1", ["lite"])
    assert place(server, "lite", "ap-south", required=True) == "ap-south"
    with pytest.raises(UnknownPipeline) as error:
        place(server, "sam3", "us-east", required=True)
    assert error.value.details == {"pipelines": ["lite"], "regions_serving_it": ["eu-west"]}
