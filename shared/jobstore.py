"""The job store: job records in Redis. Every job state change goes through here, each one atomic (Lua)."""

from __future__ import annotations

import enum
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.errors import IdempotencyConflict, JobAlreadyFinished, NotFound
from shared.keys import Keys
from shared.redis_connection import redis_client
from shared.settings import Settings

MICRO_USD = 1_000_000
# A new job is owed its first message: the API sends it and crosses it off the outbox at once. One still
# there after this long (the API died in between, or Redis refused the send) is sent by the router.
SEND_GRACE_S = 5.0
DEFAULT_PAGE_SIZE = 20
# Status-filtered listing scans at most this many records per page before returning a cursor.
MAX_SCAN_PER_PAGE = 500


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class ClaimResult(enum.StrEnum):
    CLAIMED = "claimed"
    STALE = "stale"  # token does not match: an old or duplicate message
    MISSING = "missing"
    NOT_QUEUED = "not_queued"  # already running, finished or canceled


class LeaseState(enum.StrEnum):
    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"
    LOST = "lost"  # the job was taken over or ended: stop and write nothing


class CancelResult(enum.StrEnum):
    CANCELED = "canceled"
    REQUESTED = "cancel_requested"


_CREATE = """
local idem = KEYS[4]
if idem ~= '' then
  local seen = redis.call('GET', idem)
  if seen then
    local sep = string.find(seen, '|', 1, true)
    local job_id = string.sub(seen, 1, sep - 1)
    if string.sub(seen, sep + 1) == ARGV[4] then return {'existing', job_id} end
    return {'conflict', job_id}
  end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[5], clock[1], KEYS[1])
-- owed a message: the caller sends it and crosses it off; if it dies first, the router sends it when due
redis.call('ZADD', KEYS[6], tonumber(clock[1]) * 1000 + tonumber(ARGV[5]), KEYS[1])
if idem ~= '' then redis.call('SET', idem, ARGV[1] .. '|' .. ARGV[4], 'EX', ARGV[3]) end
return {'created', ARGV[1]}
"""

# Appends to the job's region history (what GET shows as `history`): where it was queued, moved, started
# and requeued, with the attempt and the Redis clock. Bounded: the first entry and the latest ones stay.
_HISTORY = """
local function record(job_key, event, region)
  local clock = redis.call('TIME')
  local history = cjson.decode(redis.call('HGET', job_key, 'history') or '[]')
  if #history >= 32 then table.remove(history, 2) end
  table.insert(history, {
    event = event, region = region, attempt = tonumber(redis.call('HGET', job_key, 'attempt')),
    at = tonumber(clock[1]) + tonumber(clock[2]) / 1000000,
  })
  redis.call('HSET', job_key, 'history', cjson.encode(history))
end
"""

# Running jobs are indexed by lease deadline (KEYS[3]) so the router finds the ones whose worker died.
_NOW_MS = """
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_CLAIM = (
    _NOW_MS
    + _HISTORY
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 'stale' end
if status ~= 'queued' then return 'not_queued' end
redis.call('ZREM', ARGV[6] .. redis.call('HGET', KEYS[1], 'region'), KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3], 'worker', ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'region', ARGV[5]) end
record(KEYS[1], 'started', redis.call('HGET', KEYS[1], 'region'))
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[4]), KEYS[1])
return redis.call('HGETALL', KEYS[1])
"""
)

_RENEW = (
    _NOW_MS
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'token', 'cancel_requested')
if job[1] ~= 'running' or job[2] ~= ARGV[1] then return 'lost' end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), KEYS[1])
if job[3] == '1' then return 'cancel_requested' end
return 'held'
"""
)

# A running job whose lease expired: its worker is gone (or frozen). It gets a new token, so the old run
# can neither renew nor finish, and goes to the outbox, which the router empties by sending messages.
# A cancel requested meanwhile ends it instead. KEYS: job, lease, running, outbox.
_REQUEUE = (
    _NOW_MS
    + _HISTORY
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'cancel_requested', 'attempt')
if job[1] ~= 'running' then
  redis.call('ZREM', KEYS[3], KEYS[1])
  return 'not_running'
end
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  redis.call('ZADD', KEYS[3], now_ms + left, KEYS[1])
  return 'held'
end
redis.call('ZREM', KEYS[3], KEYS[1])
if job[2] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'canceled')
  return 'canceled'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'token', ARGV[1], 'attempt', tonumber(job[3] or '1') + 1)
redis.call('HDEL', KEYS[1], 'worker', 'started_at')
record(KEYS[1], 'requeued', redis.call('HGET', KEYS[1], 'region'))
redis.call('ZADD', KEYS[4], now_ms, KEYS[1])
redis.call('ZADD', ARGV[4] .. redis.call('HGET', KEYS[1], 'region'), clock[1], KEYS[1])
return 'requeued'
"""
)

# Ends a running job held by ARGV[1]. A cancel that raced in turns a success into `canceled`, unbilled.
_FINISH = """
local job = redis.call('HMGET', KEYS[1], 'status', 'token', 'cancel_requested')
-- The same token again after the job ended: this run's own write, repeated because its reply was lost.
if job[2] == ARGV[1] and (job[1] == 'succeeded' or job[1] == 'failed' or job[1] == 'canceled') then
  return job[1]
end
if job[1] ~= 'running' or job[2] ~= ARGV[1] then return 'refused' end
local status = ARGV[2]
local bill = tonumber(ARGV[4])
if job[3] == '1' and status == 'succeeded' then
  status = 'canceled'
  bill = 0
end
if status == 'canceled' then
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', ARGV[3], unpack(ARGV, 6))
end
if bill > 0 then
  redis.call('HSET', KEYS[1], 'billed_micro_usd', bill)
  redis.call('HINCRBY', KEYS[3], 'runs', 1)
  redis.call('HINCRBY', KEYS[3], 'micro_usd', bill)
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[4], KEYS[1])
redis.call('PUBLISH', ARGV[5], status)
return status
"""

# KEYS: job, the new region's queued index. ARGV: new region, queued-key prefix, region it is indexed in.
_MOVE_QUEUED = (
    _HISTORY
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'region')
if job[1] ~= 'queued' then
  redis.call('ZREM', ARGV[2] .. ARGV[3], KEYS[1])  -- ran, ended or expired meanwhile
  return 0
end
redis.call('ZREM', ARGV[2] .. job[2], KEYS[1])
redis.call('HSET', KEYS[1], 'region', ARGV[1])
redis.call('ZADD', KEYS[2], redis.call('TIME')[1], KEYS[1])
if job[2] ~= ARGV[1] then record(KEYS[1], 'moved', ARGV[1]) end
return 1
"""
)

# A worker that does not serve the job's pipeline gives its message back: the job, still queued under this
# token, is owed a message now, which the router sends where the pipeline is served. KEYS: job, outbox.
_HAND_BACK = (
    _NOW_MS
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'token')
if job[1] ~= 'queued' or job[2] ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], now_ms, KEYS[1])
return 1
"""
)

_CANCEL = """
local job = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not job[1] or job[2] ~= ARGV[1] then return 'missing' end
if job[1] == 'queued' then
  redis.call('ZREM', ARGV[4] .. redis.call('HGET', KEYS[1], 'region'), KEYS[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2], 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[3], 'canceled')
  return 'canceled'
end
if job[1] == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'cancel_requested'
end
return job[1]
"""


JOB_ID_PREFIX = "seg_"
JOB_ID_PATTERN = re.compile(r"seg_[0-9a-f]{24}")


def new_job_id() -> str:
    return JOB_ID_PREFIX + secrets.token_hex(12)


def is_job_id(value: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(value) is not None


def owned(job: JobRecord | None, owner: str, job_id: str) -> JobRecord:
    """``job`` if it belongs to ``owner``; another owner's job looks like no job at all."""
    if job is None or job.owner != owner:
        raise NotFound(f"no segmentation with id {job_id!r}")
    return job


def _job_id_of(record_key: str) -> str:
    return record_key.rsplit(":", 1)[-1]


def new_token() -> str:
    return secrets.token_hex(16)


@dataclass
class JobRecord:
    """One job as stored. ``request`` is the normalised submit body; ``outputs`` hold storage keys."""

    id: str
    owner: str
    status: JobStatus
    request: dict[str, Any]
    region: str
    priority: str
    token: str
    attempt: int
    created_at: float
    filename_stem: str
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    cancel_requested: bool = False
    outputs: list[dict[str, Any]] = field(default_factory=list)
    prompt_results: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    billed_micro_usd: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        """Pinned to its region (``region_policy=require``): it never moves, it waits there."""
        return bool(self.request.get("region_policy") == "require")

    @property
    def pipeline(self) -> str | None:
        pipeline: str | None = self.request.get("options", {}).get("pipeline")
        return pipeline

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobRecord:
        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            id=raw["id"],
            owner=raw["owner"],
            status=JobStatus(raw["status"]),
            request=json.loads(raw["request"]),
            region=raw["region"],
            priority=raw["priority"],
            token=raw["token"],
            attempt=int(raw["attempt"]),
            created_at=float(raw["created_at"]),
            filename_stem=raw["filename_stem"],
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            worker=raw.get("worker"),
            cancel_requested=raw.get("cancel_requested") == "1",
            outputs=json.loads(raw.get("outputs", "[]")),
            prompt_results=json.loads(raw.get("prompt_results", "[]")),
            error=json.loads(raw["error"]) if raw.get("error") else None,
            metrics=json.loads(raw.get("metrics", "{}")),
            billed_micro_usd=int(raw.get("billed_micro_usd", "0")),
            history=json.loads(raw.get("history", "[]")),
        )


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_cursor: str | None


def _flatten(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, separators=(",", ":"))
        flat += [name, str(value)]
    return flat


class JobStore:
    """Job records in Redis. Workers and the API both use it; the Lua scripts make each change atomic."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        job_ttl_s: int,
        idempotency_ttl_s: int,
        price_micro_usd: int,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.job_ttl_s = job_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.price_micro_usd = price_micro_usd
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._requeue = client.register_script(_REQUEUE)
        self._move_queued = client.register_script(_MOVE_QUEUED)
        self._hand_back = client.register_script(_HAND_BACK)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store on the settings' Redis; the connection opens on first use."""
        client = redis_client(settings.require_redis_url())
        return cls(
            client,
            Keys(settings.key_prefix),
            job_ttl_s=settings.job_ttl_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            price_micro_usd=round(settings.price_usd * MICRO_USD),
        )

    def create(
        self,
        *,
        owner: str,
        request: dict[str, Any],
        region: str,
        priority: str,
        filename_stem: str,
        idempotency_key_hash: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job; returns (job, created). A replayed Idempotency-Key returns the first job."""
        job_id = new_job_id()
        now = time.time()
        fields = {
            "id": job_id,
            "owner": owner,
            "status": JobStatus.QUEUED.value,
            "request": request,
            "region": region,
            "priority": priority,
            "token": new_token(),
            "attempt": 1,
            "created_at": repr(now),
            "filename_stem": filename_stem,
            "history": [{"event": "queued", "region": region, "attempt": 1, "at": round(now, 6)}],
        }
        idem_key = self.keys.idempotency(owner, idempotency_key_hash) if idempotency_key_hash else ""
        outcome, found_id = self._create(
            keys=[
                self.keys.job(job_id),
                self.keys.owner_jobs(owner),
                self.keys.sequence(),
                idem_key,
                self.keys.queued(region),
                self.keys.outbox(),
            ],
            args=[
                job_id,
                self.job_ttl_s,
                self.idempotency_ttl_s,
                request_hash or "",
                int(SEND_GRACE_S * 1000),
                *_flatten(fields),
            ],
        )
        if outcome == "conflict":
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", {"job_id": found_id}
            )
        job = self.get(found_id)
        if job is None:  # the first job of this key expired before its key did
            raise NotFound(f"job {found_id} of this Idempotency-Key has expired")
        return job, outcome == "created"

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    def get_for_owner(self, owner: str, job_id: str) -> JobRecord:
        """The job if it exists and belongs to ``owner``; another owner's job looks like no job at all."""
        return owned(self.get(job_id) if is_job_id(job_id) else None, owner, job_id)

    def list_for_owner(
        self,
        owner: str,
        *,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> JobPage:
        """Newest first. ``cursor`` is the sequence number of the last job of the previous page."""
        key = self.keys.owner_jobs(owner)
        upper = f"({int(cursor)}" if cursor else "+inf"
        jobs: list[JobRecord] = []
        scanned = 0
        last_seq: int | None = None
        while len(jobs) < limit and scanned < MAX_SCAN_PER_PAGE:
            batch: list[tuple[str, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                key, upper, "-inf", start=0, num=limit, withscores=True
            )
            if not batch:
                return JobPage(jobs, None)
            for job_id, score in batch:
                scanned += 1
                last_seq = int(score)
                job = self.get(job_id)
                if job is not None and (status is None or job.status == status):
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            upper = f"({last_seq}"
        more = bool(self.redis.zrevrangebyscore(key, upper, "-inf", start=0, num=1))
        return JobPage(jobs, str(last_seq) if more and last_seq is not None else None)

    def claim(self, job_id: str, token: str, worker_id: str, lease_s: float, region: str = "") -> ClaimResult:
        """Fenced claim: only the holder of the current token may move a queued job to running."""
        return self.claim_record(job_id, token, worker_id, lease_s, region)[0]

    def claim_record(
        self, job_id: str, token: str, worker_id: str, lease_s: float, region: str = ""
    ) -> tuple[ClaimResult, JobRecord | None]:
        """``claim``, also returning the running job's record (read in the same atomic step).

        ``region`` (the claiming worker's) becomes the job's: where it runs, after any move."""
        result = self._claim(
            keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running()],
            args=[token, worker_id, repr(time.time()), int(lease_s * 1000), region, self.keys.queued()],
        )
        if isinstance(result, str):
            return ClaimResult(result), None
        return ClaimResult.CLAIMED, JobRecord.from_hash(dict(zip(result[::2], result[1::2], strict=True)))

    def renew_lease(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        result = self._renew(
            keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running()],
            args=[token, int(lease_s * 1000)],
        )
        return LeaseState(result)

    def succeed(
        self,
        job: JobRecord,
        token: str,
        *,
        outputs: list[dict[str, Any]],
        prompt_results: list[dict[str, Any]],
        metrics: dict[str, float],
    ) -> JobStatus | None:
        """Success, billing and the announcement in one step. None: the token no longer holds the job."""
        fields = {"outputs": outputs, "prompt_results": prompt_results, "metrics": metrics}
        return self._end(job, token, JobStatus.SUCCEEDED, fields, self.price_micro_usd)

    def fail(
        self, job: JobRecord, token: str, *, error: dict[str, Any], metrics: dict[str, float]
    ) -> JobStatus | None:
        return self._end(job, token, JobStatus.FAILED, {"error": error, "metrics": metrics}, 0)

    def acknowledge_cancel(self, job: JobRecord, token: str) -> JobStatus | None:
        """A worker that saw the cancel flag ends the job as canceled and discards its work."""
        return self._end(job, token, JobStatus.CANCELED, {}, 0)

    def cancel(self, owner: str, job_id: str) -> CancelResult:
        result = self._cancel(
            keys=[self.keys.job(job_id)],
            args=[owner, repr(time.time()), self.keys.finished_channel(job_id), self.keys.queued()],
        )
        if result == "missing":
            raise NotFound(f"no segmentation with id {job_id!r}")
        if result == JobStatus.CANCELED.value:
            return CancelResult.CANCELED  # canceled now or before: cancel is idempotent
        if result == "cancel_requested":
            return CancelResult.REQUESTED
        raise JobAlreadyFinished(f"segmentation {job_id} already {result}; it cannot be canceled")

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of running jobs whose lease deadline has passed (their worker stopped renewing)."""
        now_ms = int(time.time() * 1000)
        members = self.redis.zrangebyscore(self.keys.running(), "-inf", now_ms, start=0, num=limit)
        return [_job_id_of(str(member)) for member in members]

    def requeue_if_lease_expired(self, job_id: str) -> str:
        """'requeued' (new token, attempt + 1, in the outbox), 'held', 'canceled' or 'not_running'."""
        result: str = self._requeue(
            keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running(), self.keys.outbox()],
            args=[new_token(), repr(time.time()), self.keys.finished_channel(job_id), self.keys.queued()],
        )
        return result

    def owed_messages(self, limit: int = 100) -> list[str]:
        """Ids of jobs in the outbox that are due: queued, but their message may not have been sent."""
        now_ms = int(time.time() * 1000)
        members = self.redis.zrangebyscore(self.keys.outbox(), "-inf", now_ms, start=0, num=limit)
        return [_job_id_of(str(member)) for member in members]

    def hand_back(self, job_id: str, token: str) -> bool:
        """Give back a message this worker cannot run; False if the message was stale anyway."""
        return bool(self._hand_back(keys=[self.keys.job(job_id), self.keys.outbox()], args=[token]))

    def owe_later(self, job_id: str, after_s: float) -> None:
        """Look at an owed message again in ``after_s`` (nowhere can run it now)."""
        due_ms = int((time.time() + after_s) * 1000)
        self.redis.zadd(self.keys.outbox(), {self.keys.job(job_id): due_ms}, xx=True)

    def message_sent(self, job_id: str) -> None:
        self.redis.zrem(self.keys.outbox(), self.keys.job(job_id))

    def pinned_resend_done(self, job: JobRecord) -> bool:
        return bool(self.redis.exists(self.keys.pinned_resend(job.id, job.token)))

    def record_pinned_resend(self, job: JobRecord) -> None:
        self.redis.set(self.keys.pinned_resend(job.id, job.token), 1, ex=self.job_ttl_s)

    def move_to_region(self, job_id: str, region: str, indexed_in: str) -> bool:
        """Record where a queued job's message now goes (a claim records where it actually ran).
        False, and its entry in ``indexed_in``'s queued index dropped, if it is no longer queued."""
        return bool(
            self._move_queued(
                keys=[self.keys.job(job_id), self.keys.queued(region)],
                args=[region, self.keys.queued(), indexed_in],
            )
        )

    def queued_in(self, region: str, entered_before: float, limit: int = 1000) -> list[str]:
        """Ids of jobs queued in ``region`` since before ``entered_before`` (a Unix time)."""
        members = self.redis.zrangebyscore(
            self.keys.queued(region), "-inf", entered_before, start=0, num=limit
        )
        return [_job_id_of(str(member)) for member in members]

    def usage(self, owner: str) -> tuple[int, int]:
        """(billed runs, billed micro-USD) of an owner."""
        raw = self.redis.hmget(self.keys.usage(owner), ["runs", "micro_usd"])
        return int(raw[0] or 0), int(raw[1] or 0)

    def _end(
        self, job: JobRecord, token: str, status: JobStatus, fields: dict[str, Any], bill_micro_usd: int
    ) -> JobStatus | None:
        result = self._finish(
            keys=[
                self.keys.job(job.id),
                self.keys.lease(job.id),
                self.keys.usage(job.owner),
                self.keys.running(),
            ],
            args=[
                token,
                status.value,
                repr(time.time()),
                bill_micro_usd,
                self.keys.finished_channel(job.id),
                *_flatten(fields),
            ],
        )
        return None if result == "refused" else JobStatus(result)
