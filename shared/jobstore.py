"""The job store: job records in Redis. Every job state change goes through here, each one atomic: a Lua
script of ``lua/`` that reads the Redis clock itself, so every timestamp and score comes from one clock."""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.commands.core import Script

from smartseg.shared.billing import SECONDS_PER_DAY, to_micro_usd
from smartseg.shared.errors import (
    IdempotencyConflict,
    JobAlreadyFinished,
    NotFound,
    ServiceUnavailable,
    TooManyJobs,
)
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.keys import Keys
from smartseg.shared.metrics import BILLED_RUNS, JOBS_FINISHED, JOBS_SUBMITTED
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.scripts import register
from smartseg.shared.settings import Settings

log = logging.getLogger(__name__)

# A new job is owed its first message: the API sends it and crosses it off the outbox at once. One still
# there after this long (the API died in between, or Redis refused the send) is sent by the router.
SEND_GRACE_S = 5.0
DEFAULT_PAGE_SIZE = 20
# A key at its cap of active jobs gets a slot when one of them ends: this is a polite interval to retry.
ACTIVE_JOBS_RETRY_S = 1
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


class RequeueResult(enum.StrEnum):
    REQUEUED = "requeued"  # new token, attempt + 1, owed a message
    HELD = "held"  # its lease is alive after all
    CANCELED = "canceled"  # a cancel was pending: it ends instead
    NOT_RUNNING = "not_running"


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
    """One job as stored: its spec, where it is (``region``) and under which fence (``token``, ``attempt``),
    and what it produced (``outputs`` hold storage keys)."""

    id: str
    owner: str
    status: JobStatus
    spec: JobSpec
    region: str
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
    batch_id: str | None = None

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobRecord:
        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            id=raw["id"],
            owner=raw["owner"],
            status=JobStatus(raw["status"]),
            spec=_spec_of(raw),
            region=raw["region"],
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
            batch_id=raw.get("batch_id") or None,
        )


def _spec_of(raw: dict[str, str]) -> JobSpec:
    if "spec" in raw:
        return JobSpec.model_validate_json(raw["spec"])
    return JobSpec.from_stored_request(json.loads(raw["request"]))  # a record from before specs


def _record(flat: list[str]) -> JobRecord:
    """A record from a script's HGETALL reply."""
    return JobRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


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


# A script that touches a region's queued index names the region it expects the job in; when the job is
# elsewhere (it moved meanwhile) it answers {'moved', region} and is called again with that region's key.
REGION_RETRIES = 5
MOVED = "moved"
# What cancel.lua answers when the job was queued and ends now (a repeated cancel answers "canceled").
CANCELED_NOW = "canceled_now"


class JobStore:
    """Job records in Redis. Workers, the router and the API all use it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        job_ttl_s: int,
        price_micro_usd: int,
        max_active_jobs: int = 0,
        bill_no_match: bool = False,
        usage_retention_days: int = 400,
        ack_replicas: int = 0,
        ack_timeout_ms: int = 1000,
    ) -> None:
        self._redis = client
        self.keys = keys
        self.job_ttl_s = job_ttl_s  # the record, its Idempotency-Key and its masks expire together
        self.price_micro_usd = price_micro_usd
        self.max_active_jobs = max_active_jobs  # queued + running per owner; 0: no cap
        self.bill_no_match = bill_no_match  # whether a run whose every prompt found nothing is billed
        self.usage_retention_s = usage_retention_days * SECONDS_PER_DAY
        # Replicas that must hold a job's creation (and a run's end) before the call returns (WAIT).
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = ack_timeout_ms
        self._create = register(client, "create")
        self._claim = register(client, "claim")
        self._renew = register(client, "renew")
        self._finish = register(client, "finish")
        self._cancel = register(client, "cancel")
        self._requeue = register(client, "requeue")
        self._move_queued = register(client, "move_queued")
        self._hand_back = register(client, "hand_back")
        self._due = register(client, "due")
        self._defer = register(client, "defer")

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> JobStore:
        """The store on ``client``, else on a new client of the settings' Redis (it connects on first use)."""
        return cls(
            client or redis_client(settings.require_redis_url(), settings.redis_timeout_s),
            Keys(settings.key_prefix),
            job_ttl_s=settings.job_ttl_s,
            price_micro_usd=to_micro_usd(settings.price_usd),
            max_active_jobs=settings.max_active_jobs,
            bill_no_match=settings.bill_no_match,
            usage_retention_days=settings.usage_retention_days,
            ack_replicas=settings.redis_ack_replicas,
            ack_timeout_ms=settings.redis_ack_timeout_ms,
        )

    def close(self) -> None:
        self._redis.close()

    def create(
        self,
        *,
        owner: str,
        spec: JobSpec,
        region: str,
        filename_stem: str,
        idempotency_key_hash: str | None = None,
        request_hash: str | None = None,
        max_active_jobs: int | None = None,
        batch: tuple[str, int] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job in ``region``; returns (job, created). A replayed Idempotency-Key returns
        the first job instead. ``max_active_jobs``: the caller's key's own cap (None: the store's)."""
        job_id = new_job_id()
        cap = self.max_active_jobs if max_active_jobs is None else max_active_jobs
        fields = {
            "id": job_id,
            "owner": owner,
            "status": JobStatus.QUEUED.value,
            "spec": spec.model_dump_json(),
            "region": region,
            "token": new_token(),
            "attempt": 1,
            "filename_stem": filename_stem,
            # What the state-changing scripts queue deliveries for (lua/include/webhook.lua).
            "webhook_events": ",".join(spec.webhook.events) if spec.webhook else "",
            # A batch's item: the batch counts it when it ends (lua/include/batch.lua).
            "batch_id": batch[0] if batch else "",
            "batch_index": batch[1] if batch else "",
        }
        keys = [
            self.keys.job(job_id),
            self.keys.owner_jobs(owner),
            self.keys.sequence(),
            self.keys.queued(region),
            self.keys.outbox(),
            self.keys.owner_active(owner),
        ]
        if idempotency_key_hash:
            keys.append(self.keys.idempotency(owner, idempotency_key_hash))
        args = [job_id, self.job_ttl_s, request_hash or "", int(SEND_GRACE_S * 1000), region, cap]
        (outcome, found), acknowledged = self._replicated(self._create, keys, [*args, *_flatten(fields)])
        if outcome == "created":
            JOBS_SUBMITTED.labels(region, spec.pipeline, spec.priority).inc()
            if acknowledged < self.ack_replicas:
                # It exists on the primary and will run (it is owed its message); only its survival of
                # the primary's loss is unconfirmed. A retry under the same Idempotency-Key returns it.
                raise ServiceUnavailable(
                    f"job {job_id} was created, but {acknowledged} of {self.ack_replicas} replicas "
                    f"confirmed it within {self.ack_timeout_ms} ms; retry with the same Idempotency-Key",
                    {"job_id": job_id, "replicas": self.ack_replicas, "acknowledged": acknowledged},
                )
            return _record(found), True
        if outcome == "too_many":
            raise TooManyJobs.over(
                f"{found} jobs queued or running, as many as a key may have; wait for one to end",
                budget="active-jobs",
                quota=cap,
                retry_after_s=ACTIVE_JOBS_RETRY_S,
                details={"active_jobs": int(found), "max_active_jobs": cap},
            )
        if outcome == "conflict":
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", {"job_id": found}
            )
        job = self.get(found)
        if job is None:  # the first job of this key expired before its key did
            raise NotFound(f"job {found} of this Idempotency-Key has expired")
        return job, False

    def get(self, job_id: str) -> JobRecord | None:
        raw = self._redis.hgetall(self.keys.job(job_id))
        return JobRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Several records in one round trip, in order (None: expired)."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        return [JobRecord.from_hash(raw) if raw else None for raw in pipe.execute()]

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
        batch_id: str | None = None,
    ) -> JobPage:
        """Newest first. ``cursor`` is the sequence number of the last job of the previous page. A filter
        (``status``, ``batch_id``) scans at most MAX_SCAN_PER_PAGE jobs a page: a short page may have a
        cursor."""
        key = self.keys.owner_jobs(owner)
        upper = f"({int(cursor)}" if cursor else "+inf"
        jobs: list[JobRecord] = []
        scanned = 0
        last_seq: int | None = None
        while len(jobs) < limit and scanned < MAX_SCAN_PER_PAGE:
            batch: list[tuple[str, float]] = self._redis.zrevrangebyscore(  # type: ignore[assignment]
                key, upper, "-inf", start=0, num=limit, withscores=True
            )
            if not batch:
                return JobPage(jobs, None)
            records = self.get_many([job_id for job_id, _ in batch])  # one round trip per batch
            for (_, score), job in zip(batch, records, strict=True):
                scanned += 1
                last_seq = int(score)
                if (
                    job is not None
                    and (status is None or job.status == status)
                    and (batch_id is None or job.batch_id == batch_id)
                ):
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            upper = f"({last_seq}"
        more = bool(self._redis.zrevrangebyscore(key, upper, "-inf", start=0, num=1))
        return JobPage(jobs, str(last_seq) if more and last_seq is not None else None)

    def claim(self, job_id: str, token: str, worker_id: str, lease_s: float, region: str = "") -> ClaimResult:
        """Fenced claim: only the holder of the current token may move a queued job to running."""
        return self.claim_record(job_id, token, worker_id, lease_s, region)[0]

    def claim_record(
        self, job_id: str, token: str, worker_id: str, lease_s: float, region: str = ""
    ) -> tuple[ClaimResult, JobRecord | None]:
        """``claim``, also returning the running job's record (read in the same atomic step).

        ``region`` (the claiming worker's) becomes the job's: where it runs, after any move."""
        result = self._in_region(
            job_id,
            region,
            lambda queued, expected: self._claim(
                keys=[self.keys.job(job_id), self.keys.lease(job_id), self.keys.running(), queued],
                args=[token, worker_id, int(lease_s * 1000), region, expected],
            ),
        )
        if isinstance(result, str):
            return ClaimResult(result), None
        return ClaimResult.CLAIMED, _record(result[1])

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
        """Success, billing and the announcement in one step. None: the token no longer holds the job. A run
        whose every prompt found nothing is billed only when ``bill_no_match`` says so."""
        fields = {"outputs": outputs, "prompt_results": prompt_results, "metrics": metrics}
        matched = any(result.get("result") == "match" for result in prompt_results)
        bill = self.price_micro_usd if matched or self.bill_no_match else 0
        return self._end(job, token, JobStatus.SUCCEEDED, fields, bill)

    def fail(
        self, job: JobRecord, token: str, *, error: dict[str, Any], metrics: dict[str, float]
    ) -> JobStatus | None:
        return self._end(job, token, JobStatus.FAILED, {"error": error, "metrics": metrics}, 0)

    def acknowledge_cancel(self, job: JobRecord, token: str) -> JobStatus | None:
        """A worker that saw the cancel flag ends the job as canceled and discards its work."""
        return self._end(job, token, JobStatus.CANCELED, {}, 0)

    def cancel(self, owner: str, job_id: str) -> CancelResult:
        result = self._in_region(
            job_id,
            None,
            lambda queued, expected: self._cancel(
                keys=[self.keys.job(job_id), queued, self.keys.owner_active(owner)],
                args=[owner, self.keys.finished_channel(job_id), expected],
            ),
        )
        if result == "missing":
            raise NotFound(f"no segmentation with id {job_id!r}")
        if result == JobStatus.CANCELED.value:
            return CancelResult.CANCELED  # canceled before: cancel is idempotent
        if result == CANCELED_NOW:
            self._count_end(job_id, JobStatus.CANCELED)
            return CancelResult.CANCELED
        if result == CancelResult.REQUESTED.value:
            return CancelResult.REQUESTED
        raise JobAlreadyFinished(f"segmentation {job_id} already {result}; it cannot be canceled")

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of running jobs whose lease deadline has passed (their worker stopped renewing)."""
        return [_job_id_of(str(member)) for member in self._due(keys=[self.keys.running()], args=[limit])]

    def requeue_if_lease_expired(self, job_id: str) -> RequeueResult:
        """A running job whose lease expired gets a new token and attempt + 1 and is owed a message."""
        return self._requeue_run(job_id, handing_back="")

    def hand_back_run(self, job_id: str, token: str) -> RequeueResult:
        """A worker shutting down gives back the run it holds under ``token``, as if its lease had
        expired now: a new token (the run can no longer renew or finish), attempt + 1, owed a message."""
        return self._requeue_run(job_id, handing_back=token)

    def _requeue_run(self, job_id: str, handing_back: str) -> RequeueResult:
        region, owner = (
            str(value) if value else None
            for value in self._redis.hmget(self.keys.job(job_id), ["region", "owner"])
        )
        result = self._in_region(
            job_id,
            region,
            lambda queued, expected: self._requeue(
                keys=[
                    self.keys.job(job_id),
                    self.keys.lease(job_id),
                    self.keys.running(),
                    self.keys.outbox(),
                    queued,
                    self.keys.owner_active(owner or ""),
                ],
                args=[new_token(), self.keys.finished_channel(job_id), expected, handing_back],
            ),
        )
        if result == RequeueResult.CANCELED.value:
            self._count_end(job_id, JobStatus.CANCELED)
        return RequeueResult(result)

    def owed_messages(self, limit: int = 100) -> list[str]:
        """Ids of jobs in the outbox that are due: queued, but their message may not have been sent."""
        return [_job_id_of(str(member)) for member in self._due(keys=[self.keys.outbox()], args=[limit])]

    def hand_back(self, job_id: str, token: str) -> bool:
        """Give back a message this worker cannot run; False if the message was stale anyway."""
        return bool(self._hand_back(keys=[self.keys.job(job_id), self.keys.outbox()], args=[token]))

    def owe_later(self, job_id: str, after_s: float) -> None:
        """Look at an owed message again in ``after_s`` (nowhere can run it now)."""
        self._defer(keys=[self.keys.outbox(), self.keys.job(job_id)], args=[int(after_s * 1000)])

    def message_sent(self, job_id: str) -> None:
        self._redis.zrem(self.keys.outbox(), self.keys.job(job_id))

    def pinned_resend_done(self, job: JobRecord) -> bool:
        return bool(self._redis.exists(self.keys.pinned_resend(job.id, job.token)))

    def record_pinned_resend(self, job: JobRecord) -> None:
        self._redis.set(self.keys.pinned_resend(job.id, job.token), 1, ex=self.job_ttl_s)

    def move_to_region(self, job_id: str, region: str, indexed_in: str) -> bool:
        """Record where a queued job's message now goes (a claim records where it actually ran).
        False, and its entry in ``indexed_in``'s queued index dropped, if it is no longer queued."""
        return bool(
            self._in_region(
                job_id,
                indexed_in,
                lambda source_queued, source: self._move_queued(
                    keys=[self.keys.job(job_id), self.keys.queued(region), source_queued],
                    args=[region, source],
                ),
            )
        )

    def queued_in(self, region: str, limit: int = 1000) -> list[str]:
        """Ids of jobs indexed as queued in ``region``, longest there first."""
        members = self._redis.zrange(self.keys.queued(region), 0, limit - 1)
        return [_job_id_of(str(member)) for member in members]

    def usage(self, owner: str) -> tuple[int, int]:
        """(billed runs, billed micro-USD) of an owner."""
        raw = self._redis.hmget(self.keys.usage(owner), ["runs", "micro_usd"])
        return int(raw[0] or 0), int(raw[1] or 0)

    def usage_by_day(self, owner: str, first_day: int, last_day: int) -> list[tuple[int, int, int]]:
        """(day, billed runs, billed micro-USD) of each UTC day from ``first_day`` to ``last_day`` (days since
        1970-01-01), zeros included, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        days = range(first_day, last_day + 1)
        for day in days:
            pipe.hmget(self.keys.usage_day(owner, day), ["runs", "micro_usd"])
        return [
            (day, int(runs or 0), int(micro or 0))
            for day, (runs, micro) in zip(days, pipe.execute(), strict=True)
        ]

    def _replicated(self, script: Script, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """``script``'s reply, and how many replicas hold its writes: WAIT on the same connection (it counts
        that connection's writes), only when acknowledged writes are asked for."""
        if not self.ack_replicas:
            return script(keys=keys, args=args), 0
        pipe = self._redis.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.wait(self.ack_replicas, self.ack_timeout_ms)
        reply, acknowledged = pipe.execute()
        return reply, int(acknowledged)

    def _end(
        self, job: JobRecord, token: str, status: JobStatus, fields: dict[str, Any], bill_micro_usd: int
    ) -> JobStatus | None:
        result, acknowledged = self._replicated(
            self._finish,
            [
                self.keys.job(job.id),
                self.keys.lease(job.id),
                self.keys.usage(job.owner),
                self.keys.running(),
                self.keys.owner_active(job.owner),
            ],
            [
                token,
                status.value,
                bill_micro_usd,
                self.keys.finished_channel(job.id),
                self.usage_retention_s,
                job.attempt,
                job.region,
                *_flatten(fields),
            ],
        )
        if acknowledged < self.ack_replicas and result != "refused":
            # Nothing to undo: if the primary is lost before a replica has it, the run's lease runs out
            # on the promoted one and the job runs again there, billed once there.
            log.warning(
                "job %s ended %s, but %d of %d replicas confirmed it in time",
                job.id,
                status.value,
                acknowledged,
                self.ack_replicas,
                extra={"job_id": job.id},
            )
        if result == "refused":
            return None
        if isinstance(result, list):  # this run's finish again, its first reply lost: counted then
            return JobStatus(result[0])
        ended = JobStatus(result)
        JOBS_FINISHED.labels(ended.value, job.region, job.spec.pipeline).inc()
        if ended is JobStatus.SUCCEEDED and bill_micro_usd:  # a cancel that raced in bills nothing
            BILLED_RUNS.labels(job.region, job.spec.pipeline).inc()
        return ended

    def _count_end(self, job_id: str, status: JobStatus) -> None:
        """Count a job a cancel or a requeue just ended (its record says where it was, and its pipeline)."""
        job = self.get(job_id)
        if job is not None:
            JOBS_FINISHED.labels(status.value, job.region, job.spec.pipeline).inc()

    def _in_region(self, job_id: str, region: str | None, call: Callable[[str, str], Any]) -> Any:
        """``call(queued index key, region)`` with the job's region: ``region`` if the caller knows it,
        else as the record says; again with the region a script answers ``moved`` with."""
        expected = region or self._redis.hget(self.keys.job(job_id), "region") or ""
        for _ in range(REGION_RETRIES):
            result = call(self.keys.queued(str(expected)), str(expected))
            if not _moved(result):
                return result
            expected = result[1]
        raise ServiceUnavailable(f"job {job_id} kept moving between regions; try again")


def _moved(result: object) -> bool:
    return isinstance(result, list) and len(result) == 2 and result[0] == MOVED
