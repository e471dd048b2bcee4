"""The worker's Celery app: the segmentation task bound to a JobRunner built from the settings."""

from __future__ import annotations

import os
import socket

from celery import Celery

from shared.celery_app import SEGMENT_TASK, make_celery
from shared.fetch import ImageFetcher, fetch_limits
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import MaskStorage
from worker.pipeline import build_pipeline
from worker.runner import JobRunner


def worker_id(settings: Settings) -> str:
    return f"{settings.region}-{socket.gethostname()}-{os.getpid()}"


def build_runner(settings: Settings) -> JobRunner:
    """Load every pipeline the settings name now, so a broken one stops the worker at start, not mid-job."""
    return JobRunner(
        store=JobStore.from_settings(settings),
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
