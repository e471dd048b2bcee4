"""Keeps a running job's lease alive and tells the runner, at each stage boundary, whether to go on."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from shared.jobstore import JobStore, LeaseState

log = logging.getLogger(__name__)

# Boundaries closer together than this share one check: a cancel that lands between fast stages is
# still honoured by the final write, which turns a canceled job's success into `canceled`.
MIN_CHECK_INTERVAL_S = 0.05


class JobCanceled(Exception):
    """Raised at a stage boundary when the client canceled the running job."""


class LeaseLost(Exception):
    """Raised at a stage boundary when another attempt holds the job now: stop and write nothing."""


class LeaseKeeper:
    """Renews the lease every third of its length in a thread, and on demand at stage boundaries."""

    def __init__(self, store: JobStore, job_id: str, token: str, lease_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.lease_s = lease_s
        self.state = LeaseState.HELD
        self._checked_at = time.monotonic()  # the claim just now was a check
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_s)

    def checkpoint(self) -> None:
        """Renew and raise if the job was canceled or taken over (unless checked a moment ago)."""
        if time.monotonic() - self._checked_at < MIN_CHECK_INTERVAL_S:
            return
        self._checked_at = time.monotonic()
        self.state = self.store.renew_lease(self.job_id, self.token, self.lease_s)
        if self.state is LeaseState.LOST:
            raise LeaseLost(self.job_id)
        if self.state is LeaseState.CANCEL_REQUESTED:
            raise JobCanceled(self.job_id)

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.state = self.store.renew_lease(self.job_id, self.token, self.lease_s)
            except Exception as exc:  # a Redis blip: the next renewal or checkpoint tries again
                log.warning("lease renewal of %s failed: %s", self.job_id, exc)
            if self.state is LeaseState.LOST:
                return
