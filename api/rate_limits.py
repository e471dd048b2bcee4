"""Rate limits per key: a token bucket per owner and budget, taken in one atomic Lua step on the Redis
clock (``lua/take_token.lua``). Over budget is ``429 rate_limited`` with ``Retry-After``; that 429 and every
response to a request that spent a token carry the IETF ``RateLimit-Policy`` / ``RateLimit`` headers
(draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

import math

import redis.asyncio as aioredis
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartseg.api.auth import Caller
from smartseg.shared.errors import RateLimited, rate_limit_headers
from smartseg.shared.keys import Keys
from smartseg.shared.scripts import register_async

READS = "requests"  # every call but a submit; submits spend their priority's budget
# request.state.<this>: the headers of the token the request spent (deps.take_token), for RateLimitHeaders.
STATE_FIELD = "rate_limit_headers"


class RateLimiter:
    def __init__(self, client: aioredis.Redis, keys: Keys, per_s: float, burst: int) -> None:
        self.keys = keys
        self.per_s = per_s
        self.burst = burst
        self._take = register_async(client, "take_token")

    async def take(self, caller: Caller, budget: str) -> dict[str, str]:
        """Spend one of the caller's tokens of ``budget``: the RateLimit headers of what is left (none
        when the key has no limit); RateLimited when there is no token. The bucket is the owner's (a
        rotated key's successor shares it); its rate and burst are the key's own, else the settings'."""
        limits = caller.limits
        per_s = self.per_s if limits.rate_limit_per_s is None else limits.rate_limit_per_s
        burst = self.burst if limits.rate_limit_burst is None else limits.rate_limit_burst
        if not per_s:
            return {}
        taken, left, wait_ms = await self._take(
            keys=[self.keys.rate_bucket(caller.owner, budget)], args=[per_s, burst, 1]
        )
        window = max(1, math.ceil(burst / per_s))
        if taken:
            # Seconds until the bucket is full again; counted from whole tokens, so never too early.
            reset = math.ceil((burst - int(left)) / per_s)
            return rate_limit_headers(budget, quota=burst, left=int(left), reset_s=reset, window_s=window)
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        raise RateLimited.over(
            f"rate limit of {budget} reached: {per_s:g}/s, bursts of {burst}",
            budget=budget,
            quota=burst,
            retry_after_s=retry_after,
            left=int(left),
            window_s=window,
            details={"budget": budget, "retry_after_s": retry_after},
        )


class RateLimitHeaders:
    """ASGI middleware: the response to a request that spent a token says what is left of its budget, as
    the draft has servers do on any response, not only on a 429 (which brings its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            # request.state is scope["state"], filled in by the time the response starts.
            if message["type"] == "http.response.start" and (
                spent := scope.get("state", {}).get(STATE_FIELD)
            ):
                headers = MutableHeaders(scope=message)
                if "RateLimit" not in headers:
                    headers.update(spent)
            await send(message)

        await self.app(scope, receive, send_with_headers)
