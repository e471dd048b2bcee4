"""The regions' Celery queues as Redis lists: their lengths, and atomic moves of queued messages from one
region to another (what the router does when a region's workers are gone).

kombu publishes with LPUSH and consumes with BRPOP, so the oldest message is at the right end. A move takes
the oldest first and puts them behind the target's own queue, keeping their order. Each message's
``delivery_info.routing_key`` is rewritten on the way: kombu restores an unacked message to the queue its
routing key names, so without it a message that had moved would return to the dead region's queue.
Messages of jobs pinned to their region (``region_policy=require``), and of jobs whose pipeline the target
does not serve, stay where they are, in order.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from shared.celery_app import PINNED_HEADER, PIPELINE_HEADER
from shared.keys import Keys, queue_name

# KEYS: source list, target list. ARGV: old routing key, new routing key, most messages to move, pin mark,
# pipeline header name, the target's pipelines as ",a,b," (or "*": any).
_MOVE = """
local old = '"routing_key": "' .. ARGV[1] .. '"'
local new = '"routing_key": "' .. ARGV[2] .. '"'
local moved = 0
local stay = {}
while moved < tonumber(ARGV[3]) do
  local message = redis.call('RPOP', KEYS[1])
  if not message then break end
  local pipeline = string.match(message, '"' .. ARGV[5] .. '": "([^"]*)"')
  if string.find(message, ARGV[4], 1, true)
    or (pipeline and ARGV[6] ~= '*' and not string.find(ARGV[6], ',' .. pipeline .. ',', 1, true)) then
    table.insert(stay, message)
  else
    -- the last occurrence: delivery_info is in "properties", the last member kombu writes
    local at, from = nil, 1
    repeat
      local found = string.find(message, old, from, true)
      if found then at, from = found, found + 1 end
    until not found
    if at then
      message = string.sub(message, 1, at - 1) .. new .. string.sub(message, at + #old)
    end
    redis.call('LPUSH', KEYS[2], message)
    moved = moved + 1
  end
end
-- the messages that stay go back where they were, oldest at the consuming end
for index = #stay, 1, -1 do
  redis.call('RPUSH', KEYS[1], stay[index])
end
return moved
"""


class Queues:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._move = client.register_script(_MOVE)

    def length(self, region: str, priority: str) -> int:
        return int(self.client.llen(self.keys.queue(region, priority)))

    def move(
        self, source: str, target: str, priority: str, served: Iterable[str] | None = None, limit: int = 1000
    ) -> int:
        """Move up to ``limit`` queued messages of ``priority`` from region ``source`` to ``target``:
        those not pinned, whose pipeline is one of ``served`` (None: any; unmarked messages always move)."""
        moved = self._move(
            keys=[self.keys.queue(source, priority), self.keys.queue(target, priority)],
            args=[
                queue_name(source, priority),
                queue_name(target, priority),
                limit,
                f'"{PINNED_HEADER}": true',
                PIPELINE_HEADER,
                "*" if served is None else f",{','.join(served)},",
            ],
        )
        return int(moved)
