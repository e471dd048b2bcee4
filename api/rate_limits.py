"""Rate limits per key: a token bucket per owner and budget, taken in one atomic Lua step on the Redis
clock (``lua/take_token.lua``). Over budget is ``429 rate_limited`` with ``Retry-After`` and the IETF
``RateLimit-Policy`` / ``RateLimit`` headers (draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from smartseg.shared.errors import RateLimited
from smartseg.shared.keys import Keys
from smartseg.shared.scripts import register_async

READS = "requests"  # every call but a submit; submits spend their priority's budget


class RateLimiter:
    def __init__(self, client: aioredis.Redis, keys: Keys, per_s: float, burst: int) -> None:
        self.keys = keys
        self.per_s = per_s
        self.burst = burst
        self._take = register_async(client, "take_token")

    async def take(self, owner: str, budget: str) -> None:
        """Spend one of ``owner``'s tokens of ``budget``; RateLimited when there is none."""
        if not self.per_s:
            return
        taken, left, wait_ms = await self._take(
            keys=[self.keys.rate_bucket(owner, budget)], args=[self.per_s, self.burst, 1]
        )
        if taken:
            return
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        window = max(1, math.ceil(self.burst / self.per_s))
        raise RateLimited.over(
            f"rate limit of {budget} reached: {self.per_s:g}/s, bursts of {self.burst}",
            budget=budget,
            quota=self.burst,
            retry_after_s=retry_after,
            left=int(left),
            window_s=window,
            details={"budget": budget, "retry_after_s": retry_after},
        )
