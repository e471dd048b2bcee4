"""What the API's request handlers use, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from celery import Celery

from api.auth import ApiKeys
from api.job_reader import JobReader
from api.placement import Placement
from api.waiter import JobWaiter
from shared.celery_app import make_celery
from shared.fetch import FetchLimits, fetch_limits
from shared.jobstore import JobStore
from shared.keys import Keys
from shared.redis_connection import async_redis_client
from shared.settings import Settings
from shared.storage import MaskStorage


@dataclass
class Services:
    settings: Settings
    store: JobStore
    reader: JobReader
    celery: Celery
    storage: MaskStorage
    waiter: JobWaiter
    api_keys: ApiKeys
    fetch_limits: FetchLimits
    redis_async: aioredis.Redis
    placement: Placement

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        keys = Keys(settings.key_prefix)
        client_async = async_redis_client(settings.require_redis_url())
        return cls(
            settings=settings,
            store=JobStore.from_settings(settings),
            reader=JobReader(client_async, keys),
            celery=make_celery(settings),
            storage=MaskStorage.from_settings(settings),
            waiter=JobWaiter(client_async, keys),
            api_keys=ApiKeys(settings.api_key_hashes),
            fetch_limits=fetch_limits(settings),
            redis_async=client_async,
            placement=Placement(client_async, keys, settings.regions, settings.pipelines),
        )

    async def close(self) -> None:
        await self.waiter.close()
        await self.redis_async.aclose()
        self.store.redis.close()
