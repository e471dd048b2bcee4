"""``python -m smartseg.worker.router``: moves the work of dead regions and dead workers to healthy ones.

One copy is active at a time: it holds a Redis lock with a TTL and renews it every tick; other copies
stand by and take over once the holder stops renewing (it died), within the lock's TTL.
Every ~0.5 s the active copy reads region health from the heartbeats and, for each region without a live
worker, moves its queued messages (interactive, then batch) to the healthy regions with the least queued
work per live worker that serve their pipelines (jobs pinned to their region stay); and every running job
whose lease expired (its worker died or froze) gets a new token and a new message, in a healthy region
unless pinned; and every new job whose first message was not confirmed sent gets one. It also makes
batches' items into jobs, a moving window at a time (``batch_expander.py``). A message
that moves twice, or that a dead worker's restore brings back, is harmless: the fenced claim runs each
job once, and a run that lost its lease can neither renew nor finish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import redis
from celery import Celery

from smartseg.shared.batches import BatchStore
from smartseg.shared.celery_app import make_celery, send_job
from smartseg.shared.fetch import fetch_limits
from smartseg.shared.jobstore import JobRecord, JobStatus, JobStore, RequeueResult
from smartseg.shared.keys import PRIORITIES
from smartseg.shared.liveness import beat
from smartseg.shared.logs import configure_logging
from smartseg.shared.metrics import ROUTER_ACTIVE, ROUTER_MESSAGES_SENT, serve_metrics
from smartseg.shared.outbox import Outbox
from smartseg.shared.queues import Queues
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.regions import RegionState, least_loaded, least_loaded_first, region_states
from smartseg.shared.scripts import register
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from smartseg.worker.batch_expander import BatchExpander
from smartseg.worker.mask_retention import MaskRetention

log = logging.getLogger("smartseg.worker.router")  # not __main__ under `python -m`

TICK_S = 0.5
OWED_RETRY_S = 5.0  # an owed message nowhere can run is looked at again this much later
LOCK_TTL_S = 3.0
MOVE_STEP = 1000  # messages one atomic move step carries
MOVE_BUDGET_S = 1.0  # of moving per tick: the lock is renewed between ticks


class RouterLock:
    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_s: float = LOCK_TTL_S) -> None:
        self.client = client
        self.key = key
        self.holder = holder
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = register(client, "renew_lock")

    def hold(self) -> bool:
        """Take the lock if it is free, or renew it if it is ours; False while another copy holds it."""
        if self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        if self.client.get(self.key) == self.holder:
            self.client.delete(self.key)


@dataclass(frozen=True)
class Move:
    source: str
    target: str
    priority: str
    messages: int


class Router:
    def __init__(self, client: redis.Redis, store: JobStore, celery: Celery, regions: list[str]) -> None:
        self.client = client
        self.store = store
        self.keys = store.keys
        self.celery = celery
        self.outbox = Outbox(store, celery)
        self.regions = regions
        self.queues = Queues(client, store.keys)

    def tick(self) -> list[Move]:
        states = region_states(self.client, self.keys, self.regions)
        healthy = {state.region: state for state in states if state.healthy}
        self.requeue_lost_runs()
        self.send_owed_messages(healthy)
        moves = []
        for state in states:
            if not state.healthy:
                moved, all_moved = self.move_queues(state, healthy)
                moves += moved
                # A message still waiting to move is not lost: re-sending its job would cost a duplicate.
                if all_moved:
                    self.resend_queued_jobs(state.region, healthy)
        return moves

    def move_queues(self, dead: RegionState, healthy: dict[str, RegionState]) -> tuple[list[Move], bool]:
        """A dead region's queued messages, interactive then batch, to the least loaded healthy regions
        that serve their pipelines: each region in turn, least loaded first, takes what it serves, in
        steps of MOVE_STEP for up to MOVE_BUDGET_S. Returns the moves and whether every message that could
        move has (False: the budget ran out, the next tick goes on)."""
        deadline = time.monotonic() + MOVE_BUDGET_S
        moves = []
        for priority in PRIORITIES:
            if not dead.queued[priority]:
                continue
            for target in least_loaded_first(healthy.values()):
                while True:
                    moved = self.queues.move(
                        dead.region, target.region, priority, target.pipelines, limit=MOVE_STEP
                    )
                    if moved:
                        ROUTER_MESSAGES_SENT.labels("moved", target.region).inc(moved)
                        target.queued[priority] += moved
                        moves.append(Move(dead.region, target.region, priority, moved))
                        log.info(
                            "moved %d %s messages from %s to %s", moved, priority, dead.region, target.region
                        )
                    if moved < MOVE_STEP:
                        break  # this target took all it serves
                    if time.monotonic() > deadline:
                        return moves, False
                if not self.queues.length(dead.region, priority):
                    break
        return moves, True

    def resend_queued_jobs(self, dead: str, healthy: dict[str, RegionState]) -> int:
        """A new message for every job still queued in a dead region: in a healthy region that serves its
        pipeline, or, for a job pinned there, in its own region, once per attempt.

        A worker killed while blocked in BRPOP takes the message Redis just handed it along (kombu records
        it as unacked only once it has read it), so a queued job can have no message anywhere. A message
        the move above carried took its job's index entry along, so what is left here is what lost its
        message (and jobs pinned here). The message is sent before the job's index entry moves: a crash
        in between means one duplicate, which the fenced claim drops, never none."""
        sent = 0
        for job_id in self.store.queued_in(dead):
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                self.store.move_to_region(job_id, dead, dead)  # drops the stale entry
                continue
            if job.spec.pinned:
                if not self.store.pinned_resend_done(job):  # it waits there for its region
                    send_job(self.celery, job)
                    ROUTER_MESSAGES_SENT.labels("resent", dead).inc()
                    self.store.record_pinned_resend(job)
                    sent += 1
                continue
            target = least_loaded(healthy.values(), job.spec.pipeline)
            if target is None:
                continue  # no healthy region serves its pipeline: it waits
            send_job(self.celery, job, target.region)
            ROUTER_MESSAGES_SENT.labels("resent", target.region).inc()
            if self.store.move_to_region(job_id, target.region, dead):
                target.queued[job.spec.priority] += 1
                sent += 1
        if sent:
            log.info("re-sent %d queued jobs of %s", sent, dead)
        return sent

    def requeue_lost_runs(self) -> int:
        """Jobs whose lease expired get a new token and go to the outbox; returns how many."""
        requeued = 0
        for job_id in self.store.expired_leases():
            if self.store.requeue_if_lease_expired(job_id) is RequeueResult.REQUEUED:
                requeued += 1
                log.info("lease of %s expired: requeued with a new token", job_id, extra={"job_id": job_id})
        return requeued

    def send_owed_messages(self, healthy: dict[str, RegionState]) -> None:
        """A message for every job in the outbox that is due, where ``destination`` says."""
        for job_id in self.store.owed_messages():
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                self.store.message_sent(job_id)
                continue
            region = destination(job, healthy)
            if region is None:
                self.store.owe_later(job_id, OWED_RETRY_S)
                continue
            if region != job.region:
                self.store.move_to_region(job_id, region, job.region)
            self.outbox.send(job, region)
            ROUTER_MESSAGES_SENT.labels("owed", region).inc()
            if region in healthy:
                healthy[region].queued[job.spec.priority] += 1


def destination(job: JobRecord, healthy: dict[str, RegionState]) -> str | None:
    """Where an owed message goes: the job's region while it is healthy and serves the job's pipeline;
    else, unless pinned, the least loaded healthy region that serves it. With no healthy region, the
    job's own queue, where it waits (a later move takes it on). None: its region is up but does not serve
    the pipeline and nowhere else can take it; sending it there would only bounce it back."""
    own = healthy.get(job.region)
    if own is not None and own.serves(job.spec.pipeline):
        return job.region
    if not job.spec.pinned:
        target = least_loaded(healthy.values(), job.spec.pipeline)
        if target is not None:
            return target.region
    return job.region if own is None else None


def run(settings: Settings, stop: threading.Event) -> None:
    client = redis_client(settings.require_redis_url(), settings.redis_timeout_s)
    store = JobStore.from_settings(settings, client)
    lock = RouterLock(client, store.keys.router_lock(), f"{socket.gethostname()}-{os.getpid()}")
    celery = make_celery(settings)
    router = Router(client, store, celery, settings.regions)
    batches = BatchStore(client, store.keys, settings.job_ttl_s)
    storage = MaskStorage.from_settings(settings)
    s3 = storage.client if settings.manifest_s3_prefixes else None
    retention = MaskRetention(storage, settings.job_ttl_s)
    expander = BatchExpander(settings, store, batches, Outbox(store, celery), fetch_limits(settings), s3)
    active = False
    try:
        while not stop.is_set():
            try:
                beat(client, store.keys, "router")  # standbys too: each copy's probe sees it loop
                holding = lock.hold()
                if holding != active:
                    log.info("router %s", "active" if holding else "standing by")
                    active = holding
                    ROUTER_ACTIVE.set(int(active))
                if holding:
                    router.tick()
                    expander.tick()
                    retention.tick()
            except redis.RedisError as exc:  # Redis restarting: keep trying
                log.warning("router tick failed: %s", exc)
            stop.wait(TICK_S)
    finally:
        ROUTER_ACTIVE.set(0)
        with contextlib.suppress(redis.RedisError):  # a standby takes over once the lock expires anyway
            lock.release()
        client.close()


def main() -> None:
    settings = Settings()
    configure_logging(settings, "router")
    serve_metrics(settings, "router")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("router starting for regions %s", ",".join(settings.regions))
    run(settings, stop)


if __name__ == "__main__":
    main()
