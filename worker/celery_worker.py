"""The worker's Celery app: the segmentation task bound to a JobRunner built from the settings."""

from __future__ import annotations

import os
import socket

import redis
from celery import Celery

from shared.celery_app import SEGMENT_TASK, make_celery
from shared.fetch import ImageFetcher, fetch_limits
from shared.jobstore import MICRO_USD, JobStore
from shared.keys import Keys
from shared.settings import Settings
from shared.storage import MaskStorage
from worker.pipeline import build_pipeline
from worker.runner import JobRunner


def worker_id(settings: Settings) -> str:
    return f"{settings.region}-{socket.gethostname()}-{os.getpid()}"


def build_runner(settings: Settings) -> JobRunner:
    """Load every pipeline the settings name now, so a broken one stops the worker at start, not mid-job."""
    client = redis.Redis.from_url(
        settings.require_redis_url(), decode_responses=True, health_check_interval=10
    )
    store = JobStore(
        client,
        Keys(settings.key_prefix),
        job_ttl_s=settings.job_ttl_s,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        price_micro_usd=round(settings.price_usd * MICRO_USD),
    )
    return JobRunner(
        store=store,
        storage=MaskStorage.from_settings(settings),
        fetcher=ImageFetcher(fetch_limits(settings)),
        pipelines={name: build_pipeline(name) for name in settings.pipelines},
        worker_id=worker_id(settings),
        lease_s=settings.lease_s,
        max_image_pixels=settings.max_image_pixels,
    )


def build_worker_app(settings: Settings, runner: JobRunner) -> Celery:
    app = make_celery(settings)

    @app.task(name=SEGMENT_TASK, ignore_result=True)
    def segment(job_id: str, token: str) -> str:
        return runner.run(job_id, token)

    return app
