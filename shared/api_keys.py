"""API keys managed in Redis (``smartseg keys create|list|revoke|rotate``): only each key's SHA-256 is
stored, with its public id, name, owner and creation time; the key itself is shown once, at creation.

A key's owner is what scopes jobs and usage. It outlives the key: a rotated key's successor has the same
owner, so its jobs stay visible. A revoked key is deleted, so the next request with it is refused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import redis

from smartseg.shared.credentials import hash_api_key
from smartseg.shared.errors import NotFound
from smartseg.shared.keys import Keys

KEY_PREFIX = "sk-"
KEY_ID_PREFIX = "key_"
OWNER_PREFIX = "own_"


@dataclass(frozen=True)
class ApiKey:
    id: str  # public: what logs, usage and `keys list` show
    name: str
    owner: str
    created_at: float

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> ApiKey:
        return cls(raw["id"], raw["name"], raw["owner"], float(raw["created_at"]))


class ApiKeyStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def create(self, name: str, owner: str | None = None) -> tuple[str, ApiKey]:
        """A new key for ``owner`` (a new owner if None): the key, to show once, and its record."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=KEY_ID_PREFIX + secrets.token_hex(8),
            name=name,
            owner=owner or OWNER_PREFIX + secrets.token_hex(8),
            created_at=time.time(),
        )
        key_hash = hash_api_key(secret)
        pipe = self.client.pipeline(transaction=True)
        fields = [
            "id",
            record.id,
            "name",
            record.name,
            "owner",
            record.owner,
            "created_at",
            repr(record.created_at),
        ]
        pipe.hset(self.keys.api_key(key_hash), items=fields)
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

    def revoke(self, key_id: str) -> ApiKey:
        """Delete the key: the next request with it is refused."""
        key_hash, record = self.get(key_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(key_hash))
        pipe.hdel(self.keys.api_key_ids(), key_id)
        pipe.execute()
        return record

    def rotate(self, key_id: str) -> tuple[str, ApiKey]:
        """A new key for the same owner and name, then the old one revoked: the owner is never keyless."""
        _, old = self.get(key_id)
        created = self.create(old.name, old.owner)
        self.revoke(key_id)
        return created
