"""The worker's Celery app: the segmentation task bound to a JobRunner built from the settings."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import sys
import time

from celery import Celery, Task

from shared.celery_app import PIPELINE_HEADER, SEGMENT_TASK, make_celery
from shared.fetch import ImageFetcher, fetch_limits
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import MaskStorage
from worker.model_weights import prepare_models
from worker.pipeline import build_pipeline, required_models
from worker.pipeline.base import Pipeline
from worker.runner import JobRunner

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """The worker cannot serve what its settings name; it stops before consuming any job."""


def build_pipelines(settings: Settings) -> dict[str, Pipeline]:
    """Every pipeline the settings name, with its models fetched, verified, loaded and warmed up."""
    needed = sorted({model for name in settings.pipelines for model in required_models(name, settings)})
    try:
        folders = prepare_models(settings, needed) if needed else {}
    except Exception as exc:
        raise WorkerStartError(f"models {', '.join(needed)}: {exc}") from exc
    pipelines = {}
    for name in settings.pipelines:
        try:
            pipeline = build_pipeline(name, settings, folders)
            started = time.perf_counter()
            pipeline.warm_up()
        except Exception as exc:
            raise WorkerStartError(f"pipeline {name}: {exc}") from exc
        log.info("pipeline %s (%s) ready, warm-up %.2fs", name, pipeline.model, time.perf_counter() - started)
        pipelines[name] = pipeline
    return pipelines


def worker_id(settings: Settings) -> str:
    return f"{settings.region}-{socket.gethostname()}-{os.getpid()}"


def worker_device(settings: Settings, pipelines: dict[str, Pipeline]) -> str:
    """Where this worker's models run, for its heartbeat ("cpu" when it loaded none)."""
    if all(name == "lite" for name in pipelines):
        return "cpu"
    from worker.models.runtime import Runtime

    return Runtime.from_settings(settings).device.type


def worker_versions() -> dict[str, str]:
    versions = {"smartseg": importlib.metadata.version("smartseg"), "python": platform.python_version()}
    for package in ("torch", "transformers"):
        if package in sys.modules:  # only what this worker actually loaded
            versions[package] = importlib.metadata.version(package)
    return versions


def build_runner(settings: Settings) -> JobRunner:
    """Load every pipeline the settings name now, so a broken one stops the worker at start, not mid-job."""
    return JobRunner(
        store=JobStore.from_settings(settings),
        storage=MaskStorage.from_settings(settings),
        fetcher=ImageFetcher(fetch_limits(settings)),
        pipelines=build_pipelines(settings),
        worker_id=worker_id(settings),
        lease_s=settings.lease_s,
        max_image_pixels=settings.max_image_pixels,
        region=settings.region,
    )


def build_worker_app(settings: Settings, runner: JobRunner) -> Celery:
    app = make_celery(settings)

    @app.task(name=SEGMENT_TASK, ignore_result=True, bind=True)
    def segment(task: Task, job_id: str, token: str) -> str:
        # Custom message headers are read with request.get (celery/celery#4875).
        return runner.run(job_id, token, task.request.get(PIPELINE_HEADER))

    return app
