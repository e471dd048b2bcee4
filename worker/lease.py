"""Keeps running jobs' leases alive and tells the runner, at each stage boundary, whether to go on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from smartseg.shared.errors import JobCanceled, LeaseLost
from smartseg.shared.jobstore import JobStore, LeaseState

log = logging.getLogger(__name__)

# Boundaries closer together than this share one check: a cancel that lands between fast stages is
# still honoured by the final write, which turns a canceled job's success into `canceled`.
MIN_CHECK_INTERVAL_S = 0.05


class Lease:
    """One running job's lease, as held by this worker."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        token: str,
        lease_s: float,
        check_interval_s: float = MIN_CHECK_INTERVAL_S,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.lease_s = lease_s
        self.check_interval_s = check_interval_s
        self.renewed_at = time.monotonic()  # the claim just now was a renewal

    def renew(self) -> LeaseState:
        self.renewed_at = time.monotonic()
        return self.store.renew_lease(self.job_id, self.token, self.lease_s)

    def checkpoint(self) -> None:
        """Renew and raise if the job was canceled or taken over (unless renewed a moment ago)."""
        if time.monotonic() - self.renewed_at < self.check_interval_s:
            return
        state = self.renew()
        if state is LeaseState.LOST:
            raise LeaseLost(self.job_id)
        if state is LeaseState.CANCEL_REQUESTED:
            raise JobCanceled(self.job_id)


class LeaseRenewer:
    """One thread per worker process renews every held lease each third of its length.

    Long stages (a model's forward pass) have no boundary to renew at; this keeps their lease alive.
    """

    def __init__(
        self, store: JobStore, lease_s: float, check_interval_s: float = MIN_CHECK_INTERVAL_S
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.check_interval_s = check_interval_s
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: str, token: str) -> Iterator[Lease]:
        lease = Lease(self.store, job_id, token, self.lease_s, self.check_interval_s)
        with self._lock:
            self._held[job_id] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_forever, name="lease-renewer", daemon=True)
                self._thread.start()
        try:
            yield lease
        finally:
            with self._lock:
                self._held.pop(job_id, None)

    def _renew_forever(self) -> None:
        interval = self.lease_s / 3
        while True:
            time.sleep(interval / 2)
            with self._lock:
                due = [
                    lease for lease in self._held.values() if time.monotonic() - lease.renewed_at >= interval
                ]
            for lease in due:
                try:
                    lease.renew()
                except Exception as exc:  # a Redis blip: the next round or checkpoint tries again
                    log.warning(
                        "lease renewal of %s failed: %s", lease.job_id, exc, extra={"job_id": lease.job_id}
                    )
