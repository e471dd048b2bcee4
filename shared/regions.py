"""Region health as the heartbeats in Redis tell it."""

from __future__ import annotations

import json
from typing import Any

import redis

from shared.keys import Keys


def live_workers(client: redis.Redis, keys: Keys, region: str) -> list[dict[str, Any]]:
    """The heartbeats of a region's live workers (a heartbeat key exists only while it is renewed)."""
    found = []
    for key in client.scan_iter(match=keys.heartbeat_pattern(region), count=100):
        value = client.get(key)
        if value:
            found.append(json.loads(value))
    return found
