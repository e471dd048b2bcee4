"""Holds a request until a job ends (``Prefer: wait=N``) by listening for its announcement, not polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from shared.keys import Keys


class JobWaiter:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def wait(self, job_id: str, timeout_s: float, is_finished: Callable[[], Awaitable[bool]]) -> None:
        """Return when the job is finished or ``timeout_s`` has passed, whichever comes first."""
        if timeout_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe first, then look: a job that ends in between is seen by one or the other.
            await pubsub.subscribe(self.keys.finished_channel(job_id))
            if await is_finished():
                return
            while (remaining := deadline - loop.time()) > 0:
                message = await pubsub.get_message(timeout=remaining)
                if message is not None:
                    return
        finally:
            await pubsub.aclose()
