"""Webhooks in Redis: each owner's default endpoint and signing secrets, and the deliveries.

A job's events are queued as deliveries by the Lua step that changes its state (``lua/include/
webhook.lua``): exactly once per event. The deliverer process sends them (``api/deliverer.py``) and
records every attempt here. A delivery's id is its ``webhook-id``, the same on every retry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from smartseg.shared.errors import NotFound
from smartseg.shared.jobspec import WebhookEvent, WebhookTarget
from smartseg.shared.keys import Keys
from smartseg.shared.scripts import register

SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix, not a secret)
SECRET_BYTES = 24
MAX_ATTEMPTS_KEPT = 50
PENDING, DELIVERED, FAILED, GONE = "pending", "delivered", "failed", "gone"


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: ``whsec_`` and base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def target_from_hash(raw: Mapping[Any, Any]) -> WebhookTarget | None:
    """An owner's default endpoint as stored (HGETALL of a decoding client), or None."""
    if not raw.get("url"):
        return None
    return WebhookTarget(url=str(raw["url"]), events=tuple(str(raw["events"]).split(",")))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    event: WebhookEvent
    status: str  # pending | delivered | failed | gone
    failures: int
    created_at: float
    next_attempt_at: float | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    subject: str = "job"  # what it reports on: a job, or a batch (whose id is then in job_id)

    @classmethod
    def from_hash(cls, raw: dict[str, str], attempts: list[str]) -> Delivery:
        next_at = float(raw["next_attempt_at"]) if raw.get("next_attempt_at") else None
        return cls(
            id=raw["id"],
            job_id=raw["job_key"].rsplit(":", 1)[-1],
            event=raw["event"],  # type: ignore[arg-type]
            status=raw["status"],
            failures=int(raw["failures"]),
            created_at=float(raw["created_at"]),
            next_attempt_at=next_at if raw["status"] == PENDING else None,
            attempts=[json.loads(attempt) for attempt in attempts],
            subject="batch" if ":batch:" in raw["job_key"] else "job",
        )


class WebhookStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._take = register(client, "take_deliveries")

    # --- an owner's default endpoint ---

    def default_target(self, owner: str) -> WebhookTarget | None:
        return target_from_hash(self.client.hgetall(self.keys.webhook_default(owner)))

    def set_default(self, owner: str, target: WebhookTarget) -> None:
        key = self.keys.webhook_default(owner)
        self.client.hset(key, mapping={"url": target.url, "events": ",".join(target.events)})

    def clear_default(self, owner: str) -> None:
        self.client.delete(self.keys.webhook_default(owner))

    # --- signing secrets ---

    def secrets(self, owner: str) -> list[str]:
        """The secrets that sign the owner's deliveries, current first: two during a rotation's overlap.
        The first is made on first use."""
        key = self.keys.webhook_secrets(owner)
        fields = ["current", "previous", "previous_until"]
        current, previous, until = self.client.hmget(key, fields)
        if current is None:  # made once, on first use; written only then, not on every delivery
            self.client.hsetnx(key, "current", new_secret())
            current, previous, until = self.client.hmget(key, fields)
        signing = [str(current)]
        if previous and until and float(until) > time.time():
            signing.append(str(previous))
        return signing

    def rotate_secret(self, owner: str, overlap_s: int) -> tuple[str, float]:
        """A new current secret; the old one keeps signing for ``overlap_s``. Returns (secret, until)."""
        old = self.secrets(owner)[0]
        fresh, until = new_secret(), time.time() + overlap_s
        key = self.keys.webhook_secrets(owner)
        self.client.hset(key, mapping={"current": fresh, "previous": old, "previous_until": repr(until)})
        return fresh, until

    # --- deliveries ---

    def take_due(self, limit: int, hold_s: float) -> list[str]:
        ids = self._take(keys=[self.keys.deliveries_due()], args=[limit, int(hold_s * 1000)])
        return [str(delivery_id) for delivery_id in ids]

    def get(self, delivery_id: str) -> Delivery | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.delivery(delivery_id))
        pipe.lrange(self.keys.delivery_attempts(delivery_id), 0, -1)
        raw, attempts = pipe.execute()
        return Delivery.from_hash(raw, attempts) if raw else None

    def of_job(self, job_id: str) -> list[Delivery]:
        ids = self.client.lrange(self.keys.job_deliveries(job_id), 0, -1)
        found = [self.get(str(delivery_id)) for delivery_id in ids]
        return [delivery for delivery in found if delivery is not None]

    def record(
        self, delivery: Delivery, attempt: dict[str, Any], status: str, retry_at: float | None = None
    ) -> None:
        """One attempt and where it leaves the delivery: ``retry_at`` (epoch s) when it stays pending."""
        key = self.keys.delivery(delivery.id)
        failures = delivery.failures + (0 if status == DELIVERED else 1)
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.keys.delivery_attempts(delivery.id), json.dumps(attempt))
        pipe.ltrim(self.keys.delivery_attempts(delivery.id), -MAX_ATTEMPTS_KEPT, -1)
        pipe.expire(self.keys.delivery_attempts(delivery.id), max(1, int(self.client.ttl(key))))
        pipe.hset(key, mapping={"status": status, "failures": failures, "next_attempt_at": retry_at or ""})
        if status == PENDING and retry_at is not None:
            pipe.zadd(self.keys.deliveries_due(), {delivery.id: int(retry_at * 1000)})
        else:
            pipe.zrem(self.keys.deliveries_due(), delivery.id)
        pipe.execute()

    def drop(self, delivery_id: str) -> None:
        """A due entry whose delivery is gone (its job expired) or already ended."""
        self.client.zrem(self.keys.deliveries_due(), delivery_id)

    def redeliver(self, job_id: str, delivery_id: str) -> Delivery:
        """Send the delivery again now, with a fresh retry schedule; its attempts stay listed."""
        key = self.keys.delivery(delivery_id)
        if self.client.hget(key, "job_key") != self.keys.job(job_id):
            raise NotFound(f"no delivery {delivery_id!r} for job {job_id!r}")
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"status": PENDING, "failures": 0, "next_attempt_at": repr(now)})
        pipe.zadd(self.keys.deliveries_due(), {delivery_id: int(now * 1000)})
        pipe.execute()
        found = self.get(delivery_id)
        assert found is not None  # checked above
        return found

    # --- endpoints that answered 410 Gone ---

    def is_gone(self, owner: str, url: str) -> bool:
        return bool(self.client.exists(self.keys.webhook_gone(owner, _url_hash(url))))

    def mark_gone(self, owner: str, url: str) -> None:
        self.client.set(self.keys.webhook_gone(owner, _url_hash(url)), "1")


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]
