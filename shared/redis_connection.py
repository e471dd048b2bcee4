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
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel

from smartseg.shared.redis_address import SentinelAddress, sentinel_address

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
    """A client of ``url``: a ``redis://`` server, or the master ``redis+sentinel://`` Sentinels name,
    followed to the promoted replica after a failover (a reconnect asks the Sentinels again)."""
    sentinel = sentinel_address(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **_reconnecting(Retry, timeout_s), **options)
    sentinels = Sentinel(sentinel.sentinels, sentinel_kwargs=_sentinel_options(sentinel, timeout_s))
    master: redis.Redis = sentinels.master_for(
        sentinel.master,
        db=sentinel.db,
        password=sentinel.password,
        **_reconnecting(Retry, timeout_s),
        **options,
    )
    return master


def async_redis_client(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, **options: Any) -> aioredis.Redis:
    sentinel = sentinel_address(url)
    if sentinel is None:
        return aioredis.Redis.from_url(url, **_reconnecting(AsyncRetry, timeout_s), **options)
    sentinels = AsyncSentinel(sentinel.sentinels, sentinel_kwargs=_sentinel_options(sentinel, timeout_s))
    master: aioredis.Redis = sentinels.master_for(
        sentinel.master,
        db=sentinel.db,
        password=sentinel.password,
        **_reconnecting(AsyncRetry, timeout_s),
        **options,
    )
    return master


def _sentinel_options(sentinel: SentinelAddress, timeout_s: float) -> dict[str, Any]:
    """How the Sentinels themselves are asked: with the same password and timeouts."""
    return {
        "password": sentinel.password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": True,
    }


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
