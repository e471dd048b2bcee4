"""The worker's parts, built from the settings: its pipelines on one runtime, its runner, its Celery app."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass

from celery import Celery, Task

from smartseg.shared.celery_app import PIPELINE_HEADER, SEGMENT_TASK, make_celery
from smartseg.shared.errors import UnknownPipeline, WorkerStartError
from smartseg.shared.fetch import ImageFetcher, fetch_limits
from smartseg.shared.jobstore import JobStore
from smartseg.shared.metrics import WORKER_MESSAGES
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from smartseg.worker.model_stage import ModelStage
from smartseg.worker.model_weights import prepare_models
from smartseg.worker.pipeline.base import Pipeline
from smartseg.worker.pipelines import build_pipeline, model_names, required_models
from smartseg.worker.runner import JobRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPipelines:
    pipelines: dict[str, Pipeline]
    device: str  # where their models run ("cpu" when none loaded a model), for the heartbeat


def load_pipelines(settings: Settings) -> LoadedPipelines:
    """Every pipeline the settings name, with its models fetched, verified, loaded and warmed up, on one
    runtime chosen once for the worker."""
    models = model_names(settings)
    try:
        needed = sorted({model for name in settings.pipelines for model in required_models(name, models)})
    except UnknownPipeline as exc:
        raise WorkerStartError(f"SMARTSEG_PIPELINES: {exc}") from exc
    runtime = None
    try:
        folders = prepare_models(settings, needed) if needed else {}
        if needed:
            from smartseg.worker.models.runtime import Runtime  # imports torch

            runtime = Runtime.choose(settings.device, settings.dtype, settings.torch_threads)
    except Exception as exc:
        raise WorkerStartError(f"models {', '.join(needed)}: {exc}") from exc
    pipelines = {}
    for name in settings.pipelines:
        try:
            pipeline = build_pipeline(name, models, folders, runtime, settings.embedding_cache_size)
            started = time.perf_counter()
            pipeline.warm_up()
        except Exception as exc:
            raise WorkerStartError(f"pipeline {name}: {exc}") from exc
        log.info("pipeline %s (%s) ready, warm-up %.2fs", name, pipeline.model, time.perf_counter() - started)
        pipelines[name] = pipeline
    return LoadedPipelines(pipelines, runtime.device.type if runtime else "cpu")


def worker_id(settings: Settings) -> str:
    return f"{settings.region}-{socket.gethostname()}-{os.getpid()}"


def worker_versions() -> dict[str, str]:
    versions = {"smartseg": importlib.metadata.version("smartseg"), "python": platform.python_version()}
    for package in ("torch", "transformers"):
        if package in sys.modules:  # only what this worker actually loaded
            versions[package] = importlib.metadata.version(package)
    return versions


def build_runner(settings: Settings, store: JobStore, loaded: LoadedPipelines) -> JobRunner:
    return JobRunner(
        store=store,
        storage=MaskStorage.from_settings(settings),
        fetcher=ImageFetcher(fetch_limits(settings)),
        pipelines=loaded.pipelines,
        worker_id=worker_id(settings),
        lease_s=settings.lease_s,
        max_image_pixels=settings.max_image_pixels,
        decode_max_side=settings.decode_max_side,
        region=settings.region,
        model=ModelStage(settings.max_batch, settings.batch_wait_ms / 1000),
    )


def pool_arguments(settings: Settings) -> list[str]:
    """Celery's pool for the worker. A solo worker with jobs ahead runs a thread per job it holds (one on
    the model, the rest downloading, decoding, encoding or uploading beside it): with prefetch 1 it takes
    no more messages than it has threads."""
    pool, concurrency = settings.worker_pool, settings.worker_concurrency
    if pool == "solo" and settings.worker_jobs_ahead:
        pool, concurrency = "threads", 1 + settings.worker_jobs_ahead
    return ["--pool", pool, "--concurrency", str(concurrency)]


def build_worker_app(settings: Settings, runner: JobRunner) -> Celery:
    app = make_celery(settings)

    @app.task(name=SEGMENT_TASK, ignore_result=True, bind=True)
    def segment(task: Task, job_id: str, token: str) -> str:
        # Custom message headers are read with request.get (celery/celery#4875). A message without one
        # (sent before messages named their pipeline) is handed back, and the router sends a new one.
        outcome = runner.run(job_id, token, task.request.get(PIPELINE_HEADER) or "")
        WORKER_MESSAGES.labels(outcome).inc()
        return outcome

    return app
