"""Holds requests until their jobs end (``Prefer: wait=N``) by listening for announcements, not polling.

One pattern subscription per API process serves every waiting request, so a wait costs no new
Redis connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from smartseg.shared.jobstore import JobStatus
from smartseg.shared.keys import Keys

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY_S = 0.5
LISTEN_READ_S = 1.0  # under the client's read timeout (SMARTSEG_REDIS_TIMEOUT_S, 2 s by default)


class JobWaiter:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def wait(self, job_id: str, timeout_s: float) -> None:
        """Return when the job is finished or ``timeout_s`` has passed, whichever comes first."""
        if timeout_s <= 0 or self._draining:
            return
        loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="job-finished-listener")
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(job_id, set()).add(future)
        try:
            async with asyncio.timeout_at(deadline):
                await self._subscribed.wait()
                # Registered and subscribed, then look: a job ending in between is seen one way or the other.
                if await self._is_finished(job_id):
                    return
                await future
        except TimeoutError:
            return
        finally:
            waiters = self._waiting.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiting[job_id]

    def drain(self) -> None:
        """The server is stopping: every held request answers now, with its job as it stands (202 while
        it runs), and new waits return at once, so the shutdown waits for no one's ``Prefer: wait``.
        Safe from a signal handler."""
        self._draining = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for job_id in list(self._waiting):
            self._wake(job_id)

    async def _is_finished(self, job_id: str) -> bool:
        status = await self.client.hget(self.keys.job(job_id), "status")
        return status is None or JobStatus(str(status)).is_terminal()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.finished_channel("*"))
                self._subscribed.set()
                while True:
                    # Its own read timeout: an idle channel is no hung Redis (the client's read timeout
                    # would say it is). None: nothing came within it; ask again.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_READ_S)
                    if message is not None:
                        self._wake(str(message["channel"]).rsplit(":", 1)[-1])
            except (RedisError, OSError) as exc:
                log.warning("job announcements lost (%s); resubscribing", exc)
            finally:
                self._subscribed.clear()
                await pubsub.aclose()
            # Announcements may have been missed: wake everyone so each re-reads its job.
            self._wake_all()
            await asyncio.sleep(RESUBSCRIBE_DELAY_S)

    def _wake(self, job_id: str) -> None:
        for future in self._waiting.pop(job_id, ()):
            if not future.done():
                future.set_result(None)
