"""The Lua scripts of ``lua/``, one per file, each read once and registered with a client.

A line ``--- @include "name.lua"`` in a script stands for ``lua/include/name.lua`` (how BullMQ shares
helpers between its scripts); every key a script touches reaches it through KEYS.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script

INCLUDE = re.compile(r'^--- @include "([\w.]+)"$', re.MULTILINE)


@functools.cache
def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` with its includes in place."""
    folder = files(__package__) / "lua"
    text = (folder / f"{name}.lua").read_text()
    return INCLUDE.sub(lambda line: (folder / "include" / line.group(1)).read_text(), text)


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` on ``client``: sent by SHA, and in full only when Redis does not have it yet."""
    return client.register_script(script_source(name))


def register_async(client: aioredis.Redis, name: str) -> AsyncScript:
    return client.register_script(script_source(name))
