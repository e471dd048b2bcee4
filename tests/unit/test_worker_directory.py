"""The API's view of which pipelines live workers serve, from heartbeats (fakeredis)."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import pytest

from api.worker_directory import WorkerDirectory
from shared.errors import UnknownPipeline
from shared.keys import Keys

KEYS = Keys("t")


def beat(server: fakeredis.FakeServer, region: str, worker: str, pipelines: list[str]) -> None:
    client = fakeredis.FakeRedis(server=server)
    client.set(
        KEYS.heartbeat(region, worker), json.dumps({"region": region, "pipelines": pipelines}), px=3000
    )


def check(directory: WorkerDirectory, pipeline: str, region: str) -> None:
    asyncio.run(directory.check(pipeline, region))


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def directory_on(server: fakeredis.FakeServer) -> WorkerDirectory:
    return WorkerDirectory(fakeredis.FakeAsyncRedis(server=server, decode_responses=True), KEYS, ["lite"])


def test_with_no_live_worker_the_configured_pipelines_decide(server: fakeredis.FakeServer) -> None:
    directory = directory_on(server)
    check(directory, "lite", "us-east")  # accepted: it queues until a worker is back
    with pytest.raises(UnknownPipeline) as error:
        check(directory_on(server), "sam3", "us-east")
    assert error.value.status == 422 and error.value.code == "unknown_pipeline"


def test_live_workers_decide_per_region(server: fakeredis.FakeServer) -> None:
    beat(server, "us-east", "w1", ["lite"])
    beat(server, "eu-west", "w2", ["lite", "sam3"])
    directory = directory_on(server)
    check(directory, "lite", "us-east")
    check(directory, "sam3", "eu-west")
    with pytest.raises(UnknownPipeline) as error:
        check(directory, "sam3", "us-east")
    assert error.value.details == {"pipelines": ["lite"], "regions_serving_it": ["eu-west"]}
    with pytest.raises(UnknownPipeline, match="no worker serves pipeline 'grounded-sam'"):
        check(directory, "grounded-sam", "ap-south")  # a region with no live worker: any region decides
    check(directory, "sam3", "ap-south")
