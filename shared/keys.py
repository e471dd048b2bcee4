"""Every Redis key, channel and queue name smartseg uses, and their TTLs, built in this one module."""

from __future__ import annotations

from dataclasses import dataclass

INTERACTIVE = "interactive"
BATCH = "batch"
PRIORITIES = (INTERACTIVE, BATCH)
# kombu's Redis transport with `queue_order_strategy: priority` keeps a queue in a list per priority step:
# the queue's own name for step 0 (every message smartseg sends: it sets no priority), that name with this
# separator and the step for the others. kombu's defaults (Channel.sep, PRIORITY_STEPS), found by sending
# messages of each priority (tests/integration/test_queues.py checks them against kombu's own).
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_name(region: str, priority: str = INTERACTIVE) -> str:
    """Celery queue of a region: ``seg.<region>`` for interactive work, ``seg.<region>.batch`` for batch."""
    return f"seg.{region}" if priority == INTERACTIVE else f"seg.{region}.batch"


def region_queues(region: str) -> list[str]:
    """A worker's queues, interactive first so it is consumed before batch."""
    return [queue_name(region, priority) for priority in PRIORITIES]


@dataclass(frozen=True)
class Keys:
    """Key builder; ``prefix`` lets several deployments (or test sessions) share one Redis."""

    prefix: str = "smartseg"

    @property
    def broker_prefix(self) -> str:
        """kombu's ``global_keyprefix``: queues and unacked sets of two deployments never mix."""
        return f"{self.prefix}:"

    def job(self, job_id: str) -> str:
        """Hash holding one job record."""
        return f"{self.prefix}:job:{job_id}"

    def lease(self, job_id: str) -> str:
        """String holding the running job's assignment token; its TTL is the lease."""
        return f"{self.prefix}:lease:{job_id}"

    def owner_jobs(self, owner: str) -> str:
        """Sorted set of an owner's job ids, scored by a global sequence number (newest = highest)."""
        return f"{self.prefix}:owner:{owner}:jobs"

    def owner_active(self, owner: str) -> str:
        """Sorted set of an owner's queued and running jobs' record keys, scored by creation: the cap."""
        return f"{self.prefix}:owner:{owner}:active"

    def sequence(self) -> str:
        """Counter that orders jobs for cursor paging."""
        return f"{self.prefix}:seq"

    def idempotency(self, owner: str, idempotency_key_hash: str) -> str:
        """String mapping an owner's Idempotency-Key to its job id and request hash."""
        return f"{self.prefix}:idem:{owner}:{idempotency_key_hash}"

    def usage(self, owner: str) -> str:
        """Hash of an owner's billed runs and amount (micro-USD)."""
        return f"{self.prefix}:usage:{owner}"

    def usage_day(self, owner: str, day: int) -> str:
        """Hash of an owner's billed runs and amount on one UTC day (days since 1970-01-01). finish.lua
        makes the same name from ``usage(owner)``, since only the Redis clock knows the day."""
        return f"{self.usage(owner)}:day:{day}"

    def delivery(self, delivery_id: str) -> str:
        """Hash: one webhook delivery (its job, event, status, failures); webhook.lua makes the same name."""
        return f"{self.prefix}:delivery:{delivery_id}"

    def delivery_attempts(self, delivery_id: str) -> str:
        """List of a delivery's attempts (JSON: time, status code, latency, error), newest last."""
        return f"{self.delivery(delivery_id)}:attempts"

    def deliveries_due(self) -> str:
        """Sorted set of delivery ids, scored by when (ms) each is due; webhook.lua makes the same name."""
        return f"{self.prefix}:deliveries:due"

    def job_deliveries(self, job_id: str) -> str:
        """List of a job's delivery ids, in the order they were queued; webhook.lua makes the same name."""
        return f"{self.job(job_id)}:deliveries"

    def webhook_default(self, owner: str) -> str:
        """Hash: an owner's default webhook endpoint (url, events), used by jobs that name none."""
        return f"{self.prefix}:webhook-default:{owner}"

    def webhook_secrets(self, owner: str) -> str:
        """Hash: an owner's signing secrets (current; previous and until when it still signs)."""
        return f"{self.prefix}:webhook-secrets:{owner}"

    def webhook_gone(self, owner: str, url_hash: str) -> str:
        """String: an endpoint of the owner's that answered 410 Gone; nothing more is sent to it."""
        return f"{self.prefix}:webhook-gone:{owner}:{url_hash}"

    def batch(self, batch_id: str) -> str:
        """Hash: a batch's record and counts; batch.lua makes the same name."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_items(self, batch_id: str) -> str:
        """List of a batch's inline items (JSON), in order."""
        return f"{self.batch(batch_id)}:items"

    def batch_results(self, batch_id: str) -> str:
        """Hash: item index -> what it became ({job_id, error}), written once per item."""
        return f"{self.batch(batch_id)}:results"

    def batches_expanding(self) -> str:
        """Set of the batches whose items are still being made into jobs."""
        return f"{self.prefix}:batches:expanding"

    def batch_idempotency(self, owner: str, idempotency_key_hash: str) -> str:
        """String: the batch an owner's Idempotency-Key made."""
        return f"{self.prefix}:batch-idem:{owner}:{idempotency_key_hash}"

    def api_key(self, key_hash: str) -> str:
        """Hash describing a managed API key (id, name, owner, created_at), found by the key's SHA-256."""
        return f"{self.prefix}:apikey:{key_hash}"

    def api_key_ids(self) -> str:
        """Hash: public key id -> the key's SHA-256 (what `keys list`, `revoke` and `rotate` go by)."""
        return f"{self.prefix}:apikey-ids"

    def rate_bucket(self, owner: str, budget: str) -> str:
        """Hash: an owner's token bucket for one budget (requests, interactive or batch submissions)."""
        return f"{self.prefix}:rate:{owner}:{budget}"

    def heartbeat(self, region: str, worker_id: str) -> str:
        """String describing a live worker; it expires unless the worker renews it."""
        return f"{self.prefix}:heartbeat:{region}:{worker_id}"

    def heartbeat_pattern(self, region: str) -> str:
        """SCAN pattern matching every heartbeat of a region."""
        return f"{self.prefix}:heartbeat:{region}:*"

    def region_beats(self) -> str:
        """Hash: region -> time of the latest heartbeat of any of its workers (outlives the heartbeats)."""
        return f"{self.prefix}:region-beats"

    def queue(self, region: str, priority: str = INTERACTIVE) -> str:
        """Redis list of a region's Celery queue (kombu prefixes broker keys with ``broker_prefix``)."""
        return f"{self.broker_prefix}{queue_name(region, priority)}"

    def queue_lists(self, region: str, priority: str = INTERACTIVE) -> list[str]:
        """Every Redis list of a region's Celery queue, one per kombu priority step, ``queue`` first."""
        base = self.queue(region, priority)
        return [base, *(f"{base}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in KOMBU_PRIORITY_STEPS[1:])]

    def queued(self, region: str = "") -> str:
        """Sorted set of a region's queued jobs' record keys (scored by when they entered it): what the
        router re-sends when a dead worker took a message with it. ``queued()`` is the prefix of these."""
        return f"{self.prefix}:queued:{region}"

    def running(self) -> str:
        """Sorted set of running jobs' record keys, scored by lease deadline (ms): the router's watch list."""
        return f"{self.prefix}:running"

    def outbox(self) -> str:
        """Sorted set of jobs owed a queue message (new, or requeued after a lost lease), scored by when
        it is due (ms); an entry leaves once the message is sent."""
        return f"{self.prefix}:outbox"

    def pinned_resend(self, job_id: str, token: str) -> str:
        """String set once the router has re-sent a pinned job's message for this attempt (token)."""
        return f"{self.prefix}:pinned-resend:{job_id}:{token}"

    def router_lock(self) -> str:
        """String naming the active router; its TTL lets a standby take over when the holder dies."""
        return f"{self.prefix}:router-lock"

    def process_beat(self, role: str, hostname: str, pid: int) -> str:
        """String a router or deliverer process refreshes while it runs; its TTL says it stopped."""
        return f"{self.prefix}:alive:{role}:{hostname}:{pid}"

    def process_beat_pattern(self, role: str, hostname: str) -> str:
        """SCAN pattern matching the beats of one role's processes on one host (container probes); the
        host is a segment of its own, so host `web` never matches `web-2`."""
        return f"{self.prefix}:alive:{role}:{hostname}:*"

    def every_heartbeat_pattern(self) -> str:
        """SCAN pattern matching the heartbeats of every region."""
        return f"{self.prefix}:heartbeat:*"

    def finished_channel(self, job_id: str) -> str:
        """Pub/sub channel announcing that a job reached a terminal state."""
        return f"{self.prefix}:finished:{job_id}"
