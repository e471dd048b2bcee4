"""Redis clients that ride out a Redis restart: a dropped connection is reopened and the command retried.

A command whose reply was lost may have run: job ids and fence tokens are chosen before the call, so a
repeated create or finish finds its own earlier write (see the job store's Lua). A repeated claim is
refused like any second claim; the job runs again once its lease expires.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

# 0.1, 0.2, 0.4, 0.8, 1, 1 s apart: a restarting Redis has about 3.5 s to come back before callers see
# the error (the API answers 503, a worker's run is picked up again when its lease expires).
RECONNECT_ATTEMPTS = 6
BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
RETRIED_ERRORS = [ConnectionError, TimeoutError]
# An idle pooled connection is pinged before reuse after this long, so a restarted Redis is noticed.
HEALTH_CHECK_S = 10


def redis_client(url: str, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, **_reconnecting(Retry), **options)


def async_redis_client(url: str, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, **_reconnecting(AsyncRetry), **options)


def _reconnecting(retry: type[Retry] | type[AsyncRetry]) -> dict[str, Any]:
    """The options both kinds of client share; only their Retry class differs."""
    return {
        "decode_responses": True,
        "health_check_interval": HEALTH_CHECK_S,
        "retry": retry(BACKOFF, RECONNECT_ATTEMPTS),
        "retry_on_error": RETRIED_ERRORS,
    }
