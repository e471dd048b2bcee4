"""Where a new job goes: the requested region while it is healthy and serves the pipeline, else the
healthy region that does, with the least queued work per live worker.

Health and pipelines come from the workers' heartbeats, re-read at most once a second (a SCAN per submit
would cost more than the submit); queue lengths are read only when a job has to move.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import redis.asyncio as aioredis

from smartseg.shared.errors import UnknownPipeline
from smartseg.shared.keys import PRIORITIES, Keys
from smartseg.shared.regions import RegionState, least_loaded_first, workers_by_region

REFRESH_S = 1.0


class Placement:
    def __init__(self, client: aioredis.Redis, keys: Keys, regions: list[str], configured: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.regions = regions
        self.configured = configured  # the pipelines accepted while no worker is live
        self._served: dict[str, RegionState] = {}
        self._read_at = float("-inf")

    async def served(self) -> dict[str, RegionState]:
        """Region -> its live workers and their pipelines (regions without live workers are absent)."""
        if time.monotonic() - self._read_at >= REFRESH_S:
            beats = []
            async for key in self.client.scan_iter(match=self.keys.every_heartbeat_pattern(), count=200):
                beat = await self.client.get(key)
                if beat:
                    beats.append(json.loads(beat))
            self._served, self._read_at = workers_by_region(beats), time.monotonic()
        return self._served

    async def place(self, pipeline: str, requested: str, required: bool) -> str:
        """The region to queue the job in; UnknownPipeline (422) when no live worker could run it.

        ``required`` keeps the job in ``requested`` (data residency): it waits there if the region is down.
        With no live worker anywhere, the job is queued where it asked to be and starts when one is back.
        """
        served = await self.served()
        if not served:
            if pipeline not in self.configured:
                raise UnknownPipeline(
                    f"no worker serves pipeline {pipeline!r}", {"pipelines": sorted(self.configured)}
                )
            return requested
        eligible = {
            name: state for name, state in served.items() if state.serves(pipeline) and name in self.regions
        }
        if required:
            if requested in served and requested not in eligible:
                raise UnknownPipeline(
                    f"no worker in region {requested!r} serves pipeline {pipeline!r}",
                    {
                        "pipelines": sorted(served[requested].pipelines),
                        "regions_serving_it": sorted(eligible),
                    },
                )
            return requested
        if not eligible:
            everywhere = sorted(set().union(*(state.pipelines for state in served.values())))
            raise UnknownPipeline(f"no worker serves pipeline {pipeline!r}", {"pipelines": everywhere})
        if requested in eligible:
            return requested
        # Queue lengths are read only now, when the job has to go elsewhere; the cached states stay as read.
        loaded = [await self._with_queues(state) for state in eligible.values()]
        return least_loaded_first(loaded, pipeline)[0].region  # every one of them serves the pipeline

    async def _with_queues(self, state: RegionState) -> RegionState:
        queued = {
            priority: int(await self.client.llen(self.keys.queue(state.region, priority)))
            for priority in PRIORITIES
        }
        return replace(state, queued=queued)
