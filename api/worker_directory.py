"""Which pipelines the live workers serve, per region, read from their heartbeats.

Submit consults it so a job for a pipeline no worker serves gets a 422 at once instead of waiting in a
queue forever. It is re-read at most once a second: a SCAN per request would cost more than the submit.
"""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from shared.errors import UnknownPipeline
from shared.keys import Keys

REFRESH_S = 1.0


class WorkerDirectory:
    def __init__(self, client: aioredis.Redis, keys: Keys, configured_pipelines: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.configured = configured_pipelines
        self._served: dict[str, set[str]] = {}
        self._read_at = float("-inf")

    async def served(self) -> dict[str, set[str]]:
        """Region -> pipelines its live workers advertise (regions without live workers are absent)."""
        if time.monotonic() - self._read_at >= REFRESH_S:
            served: dict[str, set[str]] = {}
            async for key in self.client.scan_iter(match=self.keys.every_heartbeat_pattern(), count=200):
                beat = await self.client.get(key)
                if beat:
                    info = json.loads(beat)
                    served.setdefault(info["region"], set()).update(info.get("pipelines", []))
            self._served, self._read_at = served, time.monotonic()
        return self._served

    async def check(self, pipeline: str, region: str) -> None:
        """Raise UnknownPipeline when live workers exist and none that could run the job serves ``pipeline``.

        With no live worker at all (a restart, an outage) the configured list decides, so the job queues.
        """
        served = await self.served()
        if not served:
            if pipeline not in self.configured:
                raise UnknownPipeline(
                    f"no worker serves pipeline {pipeline!r}", {"pipelines": sorted(self.configured)}
                )
            return
        if region in served and pipeline not in served[region]:
            elsewhere = sorted(name for name, pipelines in served.items() if pipeline in pipelines)
            raise UnknownPipeline(
                f"no worker in region {region!r} serves pipeline {pipeline!r}",
                {"pipelines": sorted(served[region]), "regions_serving_it": elsewhere},
            )
        if not any(pipeline in pipelines for pipelines in served.values()):
            everywhere = sorted(set().union(*served.values()))
            raise UnknownPipeline(f"no worker serves pipeline {pipeline!r}", {"pipelines": everywhere})
