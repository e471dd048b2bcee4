"""API keys: ``Authorization: Bearer <key>``. Keys are only ever compared as SHA-256 hashes: the bootstrap
keys of ``SMARTSEG_API_KEY_HASHES`` and the managed keys in Redis (``smartseg keys create``)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from smartseg.shared.api_keys import LIMIT_FIELDS, KeyLimits
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import Unauthorized
from smartseg.shared.keys import Keys

OWNER_ID_CHARS = 16
SETTINGS_KEY_ID_CHARS = 12


@dataclass(frozen=True)
class Caller:
    owner: str  # scopes every job and the usage
    key_id: str  # public: what logs name instead of the key
    limits: KeyLimits = field(default_factory=KeyLimits)  # a managed key's own; the settings' otherwise


class ApiKeys:
    """Turns a bearer token into its caller. A managed key is looked up on every request, so a revoked
    key is refused on the very next one."""

    def __init__(self, key_hashes: list[str], client: aioredis.Redis, keys: Keys) -> None:
        self._hashes = [value.strip().lower() for value in key_hashes if value.strip()]
        self.client = client
        self.keys = keys

    async def caller(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_api_key(token.strip())
        # Compare against every configured hash so timing says nothing about which one matched.
        matched = False
        for known in self._hashes:
            matched |= hmac.compare_digest(digest, known)
        if matched:
            return Caller(owner=digest[:OWNER_ID_CHARS], key_id=f"settings-{digest[:SETTINGS_KEY_ID_CHARS]}")
        # One round trip: who the key is and its own limits.
        key_id, owner, *limits = await self.client.hmget(
            self.keys.api_key(digest), ["id", "owner", *LIMIT_FIELDS]
        )
        if key_id is None or owner is None:
            raise Unauthorized("unknown API key")
        own_limits = KeyLimits.from_hash(dict(zip(LIMIT_FIELDS, limits, strict=True)))
        return Caller(owner=str(owner), key_id=str(key_id), limits=own_limits)
