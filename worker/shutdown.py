"""A worker's SIGTERM: stop taking jobs at once, let the jobs it holds finish within a grace period, and
hand back (a new token, queued again now) those that do not, instead of leaving them to their leases."""

from __future__ import annotations

import logging
import threading
import time

import redis

from smartseg.shared.jobstore import JobStore
from smartseg.worker.heartbeat import Heartbeat
from smartseg.worker.runner import JobRunner

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.05


class GracefulShutdown:
    """``begin()`` runs in Celery's ``worker_shutting_down`` signal (so in a signal handler): it only
    starts a thread. Celery's warm shutdown itself stops consuming and waits for the running tasks."""

    def __init__(self, runner: JobRunner, store: JobStore, heartbeat: Heartbeat, grace_s: float) -> None:
        self.runner = runner
        self.store = store
        self.heartbeat = heartbeat
        self.grace_s = grace_s
        self._started = threading.Event()

    def begin(self) -> None:
        if self._started.is_set():  # a second SIGTERM: already on its way
            return
        self._started.set()
        self.runner.stop_taking_jobs()
        threading.Thread(target=self._drain, name="shutdown", daemon=True).start()

    def _drain(self) -> None:
        # No heartbeat: placement and the router stop sending work here, and if this was the region's
        # last worker its queued messages move to a healthy region.
        self.heartbeat.stop()
        held = self.runner.held()
        if held:
            log.info("shutting down: %d jobs have %.1fs to finish", len(held), self.grace_s)
        if not self._wait_for_idle(self.grace_s):
            self.hand_back()

    def _wait_for_idle(self, timeout_s: float) -> bool:
        """True once no job runs, False if one still does after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.runner.held() and time.monotonic() < deadline:
            time.sleep(IDLE_POLL_S)
        return not self.runner.held()

    def hand_back(self) -> None:
        """The jobs still held here are queued again now; their runs here stop at their next stage
        boundary, since their tokens no longer hold a lease, and can no longer finish."""
        for job_id, token in self.runner.held().items():
            try:
                result = self.store.hand_back_run(job_id, token)
            except redis.RedisError as exc:  # then its lease runs out and the router requeues it
                log.warning(
                    "could not hand job %s back (%s); its lease will expire instead",
                    job_id,
                    exc,
                    extra={"job_id": job_id},
                )
                continue
            log.info("shutting down: job %s handed back (%s)", job_id, result.value, extra={"job_id": job_id})
