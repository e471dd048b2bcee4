"""API keys managed in Redis (``smartseg keys create|list|update|revoke|rotate``): only each key's SHA-256
is stored, with its public id, name, owner, creation time and own limits; the key itself is shown once, at
creation.

A key's owner is what scopes jobs and usage. It outlives the key: a rotated key's successor has the same
owner, so its jobs stay visible. A revoked key is deleted, so the next request with it is refused.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import redis

from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import InvalidRequest, NotFound
from smartseg.shared.keys import Keys

KEY_PREFIX = "sk-"
KEY_ID_PREFIX = "key_"
OWNER_PREFIX = "own_"
# The settings' bounds: 0 turns a key's rate limit or its cap off; a bucket holds at least one token.
LIMIT_MINIMUMS = {"rate_limit_per_s": 0, "rate_limit_burst": 1, "max_active_jobs": 0}
LIMIT_FIELDS = tuple(LIMIT_MINIMUMS)  # as stored in the key's record, beside id and owner


@dataclass(frozen=True)
class KeyLimits:
    """A key's own limits, each in place of the setting of the same name; None: the setting's value."""

    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    max_active_jobs: int | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None:
                self.check(name, value)

    @staticmethod
    def check(name: str, value: float) -> None:
        """InvalidRequest for a value the setting ``name`` would refuse."""
        least = LIMIT_MINIMUMS[name]
        if not (math.isfinite(value) and value >= least):
            raise InvalidRequest(f"{name} must be {least} or more, not {value:g}")

    @classmethod
    def from_hash(cls, raw: Mapping[str, str | bytes | None]) -> KeyLimits:
        """The limits of a stored record (an absent field: the setting's value)."""
        per_s, burst, max_active = (raw.get(name) for name in LIMIT_FIELDS)
        return cls(
            None if per_s is None else float(per_s),
            None if burst is None else int(burst),
            None if max_active is None else int(max_active),
        )

    def stored(self) -> dict[str, str]:
        """The fields to store: only the limits the key has of its own."""
        return {name: str(value) for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class ApiKey:
    id: str  # public: what logs, usage and `keys list` show
    name: str
    owner: str
    created_at: float
    limits: KeyLimits = field(default_factory=KeyLimits)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> ApiKey:
        return cls(raw["id"], raw["name"], raw["owner"], float(raw["created_at"]), KeyLimits.from_hash(raw))


class ApiKeyStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def create(
        self, name: str, owner: str | None = None, limits: KeyLimits | None = None
    ) -> tuple[str, ApiKey]:
        """A new key for ``owner`` (a new owner if None) with ``limits`` of its own (None: the settings'):
        the key, to show once, and its record."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=KEY_ID_PREFIX + secrets.token_hex(8),
            name=name,
            owner=owner or OWNER_PREFIX + secrets.token_hex(8),
            created_at=time.time(),
            limits=limits or KeyLimits(),
        )
        key_hash = hash_api_key(secret)
        pipe = self.client.pipeline(transaction=True)
        fields = {
            "id": record.id,
            "name": record.name,
            "owner": record.owner,
            "created_at": repr(record.created_at),
            **record.limits.stored(),
        }
        pipe.hset(self.keys.api_key(key_hash), items=_pairs(fields))
        pipe.hset(self.keys.api_key_ids(), record.id, key_hash)
        pipe.execute()
        return secret, record

    def list(self) -> list[ApiKey]:
        """Every live key, oldest first."""
        found = []
        for key_hash in self.client.hvals(self.keys.api_key_ids()):
            raw = self.client.hgetall(self.keys.api_key(str(key_hash)))
            if raw:
                found.append(ApiKey.from_hash(raw))  # type: ignore[arg-type]
        return sorted(found, key=lambda key: key.created_at)

    def get(self, key_id: str) -> tuple[str, ApiKey]:
        """The key's hash and record; NotFound for an id that is not a live key."""
        key_hash = self.client.hget(self.keys.api_key_ids(), key_id)
        raw = self.client.hgetall(self.keys.api_key(str(key_hash))) if key_hash else {}
        if not raw:
            raise NotFound(f"no API key with id {key_id!r}")
        return str(key_hash), ApiKey.from_hash(raw)  # type: ignore[arg-type]

    def update(self, key_id: str, limits: KeyLimits) -> ApiKey:
        """Give a key these limits of its own (the others: the settings'); its next request is held to
        them."""
        key_hash, record = self.get(key_id)
        stored = limits.stored()
        pipe = self.client.pipeline(transaction=True)
        if stored:
            pipe.hset(self.keys.api_key(key_hash), items=_pairs(stored))
        if cleared := [name for name in LIMIT_FIELDS if name not in stored]:
            pipe.hdel(self.keys.api_key(key_hash), *cleared)
        pipe.execute()
        return replace(record, limits=limits)

    def revoke(self, key_id: str) -> ApiKey:
        """Delete the key: the next request with it is refused."""
        key_hash, record = self.get(key_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(key_hash))
        pipe.hdel(self.keys.api_key_ids(), key_id)
        pipe.execute()
        return record

    def rotate(self, key_id: str) -> tuple[str, ApiKey]:
        """A new key for the same owner, name and limits, then the old one revoked: the owner is never
        keyless."""
        _, old = self.get(key_id)
        created = self.create(old.name, old.owner, old.limits)
        self.revoke(key_id)
        return created


def _pairs(fields: dict[str, str]) -> list[str]:
    """HSET's field, value list (what redis-py's types accept for str fields)."""
    return [part for pair in fields.items() for part in pair]
