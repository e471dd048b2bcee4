"""Batches in Redis: the record and its counts, the inline items, and which job each item became.

A batch is expanded by the router (``worker/batch_expander.py``) in a moving window: a few of its items
are jobs at a time, so a 100,000-item batch never puts 100,000 messages in Redis, and interactive jobs
submitted later start first. Its counts move in the Lua step that ends each job (``lua/include/
batch.lua``), so they are exact; every item's job is created under an idempotency key of the batch and
its index (or the item's own ``key``), so an expansion resumed after a restart makes no item twice.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from smartseg.shared.errors import IdempotencyConflict, NotFound
from smartseg.shared.keys import Keys
from smartseg.shared.scripts import register

INLINE = "inline"
EXPANDING, RUNNING, COMPLETED, CANCELED, FAILED = "expanding", "running", "completed", "canceled", "failed"
COUNTED = ("ended", "succeeded", "failed", "canceled", "invalid", "reused", "micro_usd", "submitted")


def new_batch_id() -> str:
    return "bat_" + secrets.token_hex(12)


def item_idempotency_hash(batch_id: str, index: int, key: str | None) -> str:
    """An item's job is made once: per its own key (across batches), else per batch and index."""
    name = f"item-key:{key}" if key is not None else f"batch-item:{batch_id}:{index}"
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass(frozen=True)
class BatchRecord:
    id: str
    owner: str
    status: str
    source: str
    defaults: dict[str, Any]
    total: int | None
    counts: dict[str, int]
    created_at: float
    completed_at: float | None
    error: dict[str, Any] | None = None
    webhook_url: str | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> BatchRecord:
        return cls(
            id=raw["id"],
            owner=raw["owner"],
            status=raw["status"],
            source=raw["source"],
            defaults=json.loads(raw["defaults"]),
            total=int(raw["total"]) if raw.get("total") else None,
            counts={name: int(raw.get(name) or 0) for name in COUNTED},
            created_at=float(raw["created_at"]),
            completed_at=float(raw["completed_at"]) if raw.get("completed_at") else None,
            error=json.loads(raw["error"]) if raw.get("error") else None,
            webhook_url=raw.get("webhook_url") or None,
        )

    @property
    def done(self) -> int:
        return self.counts["ended"] + self.counts["invalid"] + self.counts["reused"]

    @property
    def in_flight(self) -> int:
        """Items that are jobs not ended yet: what the window counts."""
        made = self.counts["submitted"] - self.counts["invalid"] - self.counts["reused"]
        return made - self.counts["ended"]


class BatchStore:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._expanded = register(client, "batch_expanded")

    def create(
        self,
        owner: str,
        source: str,
        defaults: dict[str, Any],
        items: list[str] | None,
        idempotency_key_hash: str | None = None,
        webhook_url: str | None = None,
        request_hash: str = "",
    ) -> tuple[BatchRecord, bool]:
        """A new batch, to be expanded (``items``: inline items as JSON); with an Idempotency-Key seen
        before, the batch it made instead (IdempotencyConflict if that was asked with another body)."""
        batch_id = new_batch_id()
        if idempotency_key_hash:
            key = self.keys.batch_idempotency(owner, idempotency_key_hash)
            if not self.client.set(key, f"{batch_id}|{request_hash}", nx=True, ex=self.ttl_s):
                seen_id, _, seen_hash = str(self.client.get(key)).partition("|")
                if seen_hash != request_hash:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request body", {"batch_id": seen_id}
                    )
                return self.get_for_owner(owner, seen_id), False
        pipe = self.client.pipeline(transaction=True)
        record = self.keys.batch(batch_id)
        pipe.hset(
            record,
            mapping={
                "id": batch_id,
                "owner": owner,
                "status": EXPANDING,
                "source": source,
                "defaults": json.dumps(defaults),
                "created_at": repr(time.time()),
                # lua/include/webhook.lua queues `completed` for a batch with a webhook, as for a job.
                "webhook_url": webhook_url or "",
                "webhook_events": "completed" if webhook_url else "",
                **dict.fromkeys(COUNTED, 0),
            },
        )
        if items:
            pipe.rpush(self.keys.batch_items(batch_id), *items)
            pipe.expire(self.keys.batch_items(batch_id), self.ttl_s)
        pipe.expire(record, self.ttl_s)
        pipe.sadd(self.keys.batches_expanding(), batch_id)
        pipe.execute()
        return self.get(batch_id), True

    def get(self, batch_id: str) -> BatchRecord:
        raw = self.client.hgetall(self.keys.batch(batch_id))
        if not raw:
            raise NotFound(f"no batch with id {batch_id!r}")
        return BatchRecord.from_hash(raw)  # type: ignore[arg-type]

    def get_for_owner(self, owner: str, batch_id: str) -> BatchRecord:
        """Another owner's batch is no batch at all."""
        batch = self.get(batch_id) if batch_id.startswith("bat_") else None
        if batch is None or batch.owner != owner:
            raise NotFound(f"no batch with id {batch_id!r}")
        return batch

    def expanding(self) -> list[str]:
        return sorted(str(batch_id) for batch_id in self.client.smembers(self.keys.batches_expanding()))

    def inline_items(self, batch_id: str, start: int, count: int) -> list[str]:
        return [
            str(item)
            for item in self.client.lrange(self.keys.batch_items(batch_id), start, start + count - 1)
        ]

    def record_item(
        self,
        batch_id: str,
        index: int,
        job_id: str | None,
        error: dict[str, Any] | None,
        reused: bool,
        key: str | None = None,
    ) -> None:
        """Item ``index`` is read: it became ``job_id`` (or was refused with ``error``, or ``reused`` an
        earlier job). Repeating it (a resumed expansion) changes nothing."""
        results = self.keys.batch_results(batch_id)
        entry = json.dumps({"job_id": job_id, "error": error, "key": key})
        if not self.client.hsetnx(results, str(index), entry):
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.expire(results, self.ttl_s)
        pipe.hset(self.keys.batch(batch_id), "submitted", index + 1)
        if error is not None:
            pipe.hincrby(self.keys.batch(batch_id), "invalid", 1)
        if reused:
            pipe.hincrby(self.keys.batch(batch_id), "reused", 1)
        pipe.execute()

    def results(self, batch_id: str, start: int, count: int) -> list[dict[str, Any] | None]:
        """What items ``start`` .. ``start + count - 1`` became, in manifest order."""
        raw = self.client.hmget(
            self.keys.batch_results(batch_id), [str(i) for i in range(start, start + count)]
        )
        return [json.loads(entry) if entry else None for entry in raw]

    def expanded(self, batch_id: str, total: int) -> str:
        """Every item is in: the batch's total is known (and it may be completed at once)."""
        self.client.srem(self.keys.batches_expanding(), batch_id)
        return str(self._expanded(keys=[self.keys.batch(batch_id)], args=[total]))

    def fail(self, batch_id: str, error: dict[str, Any]) -> None:
        """The manifest could not be read: no more items; those already jobs run on."""
        self.client.srem(self.keys.batches_expanding(), batch_id)
        self.client.hset(
            self.keys.batch(batch_id),
            mapping={"status": FAILED, "error": json.dumps(error), "completed_at": repr(time.time())},
        )

    def cancel(self, batch_id: str) -> bool:
        """Stop expanding; False if it had already completed. Its jobs are canceled by the caller."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(self.keys.batch(batch_id), "status")
        pipe.srem(self.keys.batches_expanding(), batch_id)
        status = pipe.execute()[0]
        if status == COMPLETED:
            return False
        self.client.hset(
            self.keys.batch(batch_id), mapping={"status": CANCELED, "completed_at": repr(time.time())}
        )
        return True

    def job_ids(self, batch_id: str) -> list[str]:
        """Every job the batch made, in no particular order."""
        entries = (json.loads(entry) for entry in self.client.hvals(self.keys.batch_results(batch_id)))
        return [str(entry["job_id"]) for entry in entries if entry["job_id"]]
