"""What the API's request handlers use, built once per app from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from smartseg.api.auth import ApiKeys
from smartseg.api.job_reader import JobReader
from smartseg.api.placement import Placement
from smartseg.api.rate_limits import RateLimiter
from smartseg.api.waiter import JobWaiter
from smartseg.shared.batches import BatchStore
from smartseg.shared.celery_app import make_celery
from smartseg.shared.fetch import FetchLimits, fetch_limits
from smartseg.shared.jobspec import WebhookTarget
from smartseg.shared.jobstore import JobStore
from smartseg.shared.keys import Keys
from smartseg.shared.outbox import Outbox
from smartseg.shared.redis_connection import async_redis_client, redis_client
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from smartseg.shared.webhooks import WebhookStore, target_from_hash


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis  # sync: the job store's writes and region reads, run in worker threads
    store: JobStore
    outbox: Outbox
    reader: JobReader
    storage: MaskStorage
    waiter: JobWaiter
    api_keys: ApiKeys
    fetch_limits: FetchLimits
    redis_async: aioredis.Redis
    placement: Placement
    rate_limits: RateLimiter
    webhooks: WebhookStore
    batches: BatchStore

    async def default_webhook(self, owner: str) -> WebhookTarget | None:
        """The owner's default webhook endpoint, for a submit that names none (one async read)."""
        return target_from_hash(await self.redis_async.hgetall(self.store.keys.webhook_default(owner)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        keys = Keys(settings.key_prefix)
        client = redis_client(settings.require_redis_url(), settings.redis_timeout_s)
        client_async = async_redis_client(settings.require_redis_url(), settings.redis_timeout_s)
        store = JobStore.from_settings(settings, client)
        return cls(
            settings=settings,
            redis=client,
            store=store,
            outbox=Outbox(store, make_celery(settings)),
            reader=JobReader(client_async, keys),
            storage=MaskStorage.from_settings(settings),
            waiter=JobWaiter(client_async, keys),
            api_keys=ApiKeys(settings.api_key_hashes, client_async, keys),
            fetch_limits=fetch_limits(settings),
            redis_async=client_async,
            placement=Placement(client_async, keys, settings.regions, settings.pipelines),
            rate_limits=RateLimiter(client_async, keys, settings.rate_limit_per_s, settings.rate_limit_burst),
            webhooks=WebhookStore(client, keys),
            batches=BatchStore(client, keys, settings.job_ttl_s),
        )

    async def close(self) -> None:
        await self.waiter.close()
        await self.redis_async.aclose()
        self.redis.close()
