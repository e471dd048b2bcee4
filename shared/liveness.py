"""Liveness beats of the router and the deliverer, for container probes (``smartseg health --router``).

Workers have their own, richer heartbeat (``worker/heartbeat.py``); these two roles only need to say
"this process on this host is still looping".
"""

from __future__ import annotations

import os
import socket

import redis

from smartseg.shared.keys import Keys

ROLES = ("router", "deliverer")
BEAT_TTL_S = 10.0  # a loop ticks every fraction of a second; a probe every few seconds


def beat(client: redis.Redis, keys: Keys, role: str) -> None:
    """Called once per loop: the key lives while the loop does."""
    client.set(keys.process_beat(role, socket.gethostname(), os.getpid()), "1", px=int(BEAT_TTL_S * 1000))


def is_live(client: redis.Redis, keys: Keys, role: str, hostname: str) -> bool:
    """Whether a ``role`` process of ``hostname`` looped within the beat's TTL."""
    beats = client.scan_iter(match=keys.process_beat_pattern(role, hostname), count=100)
    return next(beats, None) is not None
