"""Where a new job goes: the requested region while it is healthy and serves the pipeline, else the
healthy region that does, with the least queued work per live worker.

Health and pipelines come from the workers' heartbeats, re-read at most once a second (a SCAN per submit
would cost more than the submit); queue lengths are read only when a job has to move.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from shared.errors import UnknownPipeline
from shared.keys import BATCH, INTERACTIVE, Keys
from shared.regions import least_loaded_first

REFRESH_S = 1.0


@dataclass
class RegionWorkers:
    live: int = 0
    pipelines: set[str] = field(default_factory=set)


class Placement:
    def __init__(self, client: aioredis.Redis, keys: Keys, regions: list[str], configured: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.regions = regions
        self.configured = configured  # the pipelines accepted while no worker is live
        self._served: dict[str, RegionWorkers] = {}
        self._read_at = float("-inf")

    async def served(self) -> dict[str, RegionWorkers]:
        """Region -> its live workers and their pipelines (regions without live workers are absent)."""
        if time.monotonic() - self._read_at >= REFRESH_S:
            served: dict[str, RegionWorkers] = {}
            async for key in self.client.scan_iter(match=self.keys.every_heartbeat_pattern(), count=200):
                beat = await self.client.get(key)
                if beat:
                    info = json.loads(beat)
                    region = served.setdefault(info["region"], RegionWorkers())
                    region.live += 1
                    region.pipelines.update(info.get("pipelines", []))
            self._served, self._read_at = served, time.monotonic()
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
            name: region
            for name, region in served.items()
            if pipeline in region.pipelines and name in self.regions
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
            everywhere = sorted(set().union(*(region.pipelines for region in served.values())))
            raise UnknownPipeline(f"no worker serves pipeline {pipeline!r}", {"pipelines": everywhere})
        if requested in eligible:
            return requested
        loads = {name: await self._queued(name) / region.live for name, region in eligible.items()}
        return least_loaded_first(loads)[0]

    async def _queued(self, region: str) -> int:
        interactive = await self.client.llen(self.keys.queue(region, INTERACTIVE))
        batch = await self.client.llen(self.keys.queue(region, BATCH))
        return int(interactive) + int(batch)
