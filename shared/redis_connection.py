"""Redis clients that ride out a Redis restart and never hang on a Redis that does not answer.

A dropped or refused connection is reopened and the command retried (a restart). A Redis that accepts
connections but does not answer (paused, overloaded, a network partition) times out after
``timeout_s`` on connect and on every read, and that is not retried: the caller fails within about that
long (the API answers 503) instead of hanging, and recovers by itself on the next command once Redis
answers again. Blocking reads that wait on purpose (a pub/sub listener) pass their own read timeout.

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
from redis.exceptions import ConnectionError
from redis.retry import Retry

# 0.1, 0.2, 0.4, 0.8, 1, 1 s apart: a restarting Redis has about 3.5 s to come back before callers see
# the error (the API answers 503, a worker's run is picked up again when its lease expires).
RECONNECT_ATTEMPTS = 6
BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)
# Not TimeoutError: retrying a Redis that does not answer would multiply the stall by the attempts.
RETRIED_ERRORS = (ConnectionError,)
DEFAULT_TIMEOUT_S = 2.0
# An idle pooled connection is pinged before reuse after this long, so a restarted Redis is noticed.
HEALTH_CHECK_S = 10


def redis_client(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, **_reconnecting(Retry, timeout_s), **options)


def async_redis_client(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, **options: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, **_reconnecting(AsyncRetry, timeout_s), **options)


def _reconnecting(retry: type[Retry] | type[AsyncRetry], timeout_s: float) -> dict[str, Any]:
    """The options both kinds of client share; only their Retry class differs."""
    return {
        "decode_responses": True,
        "health_check_interval": HEALTH_CHECK_S,
        # supported_errors replaces redis-py's default (which has TimeoutError); retry_on_error would add.
        "retry": retry(BACKOFF, RECONNECT_ATTEMPTS, supported_errors=RETRIED_ERRORS),
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
    }
