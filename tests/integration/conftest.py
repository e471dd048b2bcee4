"""Fixtures for modules that define their own ``settings``: a job store, a Celery app, mask storage and a
real worker process serving ``REGION``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from shared.celery_app import make_celery
from shared.jobstore import JobStore
from shared.launcher import stop_processes, wait_until
from shared.regions import live_workers
from shared.settings import Settings
from shared.storage import MaskStorage
from tests.integration.worker_jobs import REGION, start_worker


@pytest.fixture(scope="module")
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Celery:
    return make_celery(settings)


@pytest.fixture(scope="module")
def storage(settings: Settings) -> MaskStorage:
    return MaskStorage.from_settings(settings)


@pytest.fixture(scope="module")
def worker(settings: Settings, store: JobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A worker process for ``REGION``, up once its heartbeat is in Redis; yields its log file."""
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    process = start_worker(settings, REGION, log_path)
    wait_until(lambda: bool(live_workers(store.redis, store.keys, REGION)), "worker heartbeat")
    yield log_path
    stop_processes([process])
