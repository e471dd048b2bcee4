"""The Celery app factory: JSON only, late acks, one message at a time, no surprise queues."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobRecord
from smartseg.shared.keys import INTERACTIVE, Keys, queue_name, region_queues
from smartseg.shared.redis_address import sentinel_address
from smartseg.shared.settings import Settings

SEGMENT_TASK = "smartseg.segment"
# kombu sweeps for unacked messages older than the visibility timeout every interval * throttle seconds;
# the defaults (10 * 10) leave a killed worker's messages stranded for minutes.
UNACKED_RESTORE_INTERVAL_S = 2
UNACKED_RESTORE_THROTTLE = 1
# Sending a message retries about as long as the Redis clients do (shared/redis_connection.py), so a
# restarting Redis delays a submit instead of failing it.
PUBLISH_RETRY_POLICY = {"max_retries": 8, "interval_start": 0, "interval_step": 0.25, "interval_max": 1}


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to the settings' Redis; builds nothing at import time."""
    sentinel = sentinel_address(settings.require_redis_url())
    broker = settings.require_redis_url() if sentinel is None else sentinel.kombu_url()
    app = Celery("smartseg", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_create_missing_queues=False,
        task_queues=[Queue(name) for region in settings.regions for name in region_queues(region)],
        task_default_queue=queue_name(settings.default_region, INTERACTIVE),
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        # A Redis blip must not kill the job in progress: its writes go through the job store, and the
        # redelivered copy of its message is dropped at claim. (Celery 6 changes this default.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_S,
            "unacked_restore_throttle": UNACKED_RESTORE_THROTTLE,
            "global_keyprefix": Keys(settings.key_prefix).broker_prefix,
            # A publish to a Redis that hangs fails instead of waiting forever (kombu's own advice),
            # as every other Redis command does (shared/redis_connection.py).
            "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": settings.redis_timeout_s,
            # kombu's sentinel transport: the master the Sentinels name, asked with the same password.
            **(
                {}
                if sentinel is None
                else {"master_name": sentinel.master, "sentinel_kwargs": {"password": sentinel.password}}
            ),
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )
    return app


# Message headers the router reads without opening the job record: a job pinned to its region
# (region_policy=require) is never moved; a job's pipeline only moves to a region that serves it.
PINNED_HEADER = "smartseg_pinned"
PIPELINE_HEADER = "smartseg_pipeline"
# The job and the run a message is for, readable without decoding the body: a move of the message
# carries the job's queued-index entry with it (lua/move_messages.lua), so nothing re-sends it.
JOB_HEADER = "smartseg_job"
TOKEN_HEADER = "smartseg_token"  # noqa: S105 - a header name, not a secret


def message_headers(spec: JobSpec) -> dict[str, object]:
    """What a job's message says about it besides its id and token: the one place headers come from."""
    headers: dict[str, object] = {PIPELINE_HEADER: spec.pipeline}
    if spec.pinned:
        headers[PINNED_HEADER] = True
    return headers


def send_job(app: Celery, job: JobRecord, region: str | None = None) -> None:
    """One message for the job's current run (id and fence token) to ``region``'s queue, else its own."""
    app.send_task(
        SEGMENT_TASK,
        kwargs={"job_id": job.id, "token": job.token},
        queue=queue_name(region or job.region, job.spec.priority),
        headers={**message_headers(job.spec), JOB_HEADER: job.id, TOKEN_HEADER: job.token},
    )
