"""The outbox: messages the system owes. Every job state change that needs a message (a new job, a run
requeued after its lease expired) records the debt in the same atomic step; this sends the message and
then crosses the debt off. The API sends a new job's message at once; the router sends whatever is due.
"""

from __future__ import annotations

import logging

from celery import Celery
from redis.exceptions import RedisError

from smartseg.shared.celery_app import send_job
from smartseg.shared.jobstore import JobRecord, JobStore

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, store: JobStore, celery: Celery) -> None:
        self.store = store
        self.celery = celery

    def send(self, job: JobRecord, region: str | None = None) -> None:
        """Send the job's message (to ``region``, else its own) and cross it off. A failed send raises and
        leaves it owed; it is sent before it is crossed off, so a crash in between costs a duplicate
        message, which the fenced claim drops, never a lost one."""
        send_job(self.celery, job, region)
        try:
            self.store.message_sent(job.id)
        except RedisError as exc:
            log.warning(
                "job %s: sent, but still in the outbox (%s); it will be sent again",
                job.id,
                exc,
                extra={"job_id": job.id},
            )
