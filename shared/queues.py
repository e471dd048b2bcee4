"""The regions' Celery queues as Redis lists: their lengths, and atomic moves of queued messages from one
region to another (what the router does when a region's workers are gone; ``lua/move_messages.lua``).

A move takes the oldest first and puts them behind the target's own queue, keeping their order, and
rewrites each message's ``delivery_info.routing_key``: kombu restores an unacked message to the queue its
routing key names, so without it a message that had moved would return to the dead region's queue.
Messages of jobs pinned to their region (``region_policy=require``), and of jobs whose pipeline the target
does not serve, stay where they are, in order.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from smartseg.shared.celery_app import JOB_HEADER, PINNED_HEADER, PIPELINE_HEADER, TOKEN_HEADER
from smartseg.shared.keys import Keys, queue_name
from smartseg.shared.scripts import register


class Queues:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._move = register(client, "move_messages")

    def length(self, region: str, priority: str) -> int:
        """Messages waiting in the queue: in all its lists (a message sent with a priority is in another)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.queue_lists(region, priority):
            pipe.llen(key)
        return sum(int(length) for length in pipe.execute())

    def move(
        self, source: str, target: str, priority: str, served: Iterable[str] | None = None, limit: int = 1000
    ) -> int:
        """Move up to ``limit`` queued messages of ``priority`` from region ``source`` to ``target``:
        those not pinned, whose pipeline is one of ``served`` (None: any; unmarked messages always move).
        Each moved message's job moves with it (its queued-index entry, its record's region)."""
        moved = self._move(
            keys=[
                self.keys.queue(source, priority),
                self.keys.queue(target, priority),
                self.keys.queued(source),
                self.keys.queued(target),
            ],
            args=[
                queue_name(source, priority),
                queue_name(target, priority),
                limit,
                f'"{PINNED_HEADER}": true',
                PIPELINE_HEADER,
                "*" if served is None else f",{','.join(served)},",
                JOB_HEADER,
                TOKEN_HEADER,
                self.keys.job(""),
                source,
                target,
            ],
        )
        return int(moved)
