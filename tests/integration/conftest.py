"""Fixtures for modules that define their own ``settings``: a job store, a Celery app, mask storage and a
real worker process serving ``REGION``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from smartseg.cli.launcher import stop_processes, wait_until
from smartseg.shared.celery_app import make_celery
from smartseg.shared.jobstore import JobStore
from smartseg.shared.keys import Keys
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from tests.integration.worker_jobs import REGION, start_worker


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[redis.Redis]:
    """The module's own Redis client, for what tests read or write beside the job store."""
    connection = redis_client(settings.require_redis_url())
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def store(settings: Settings, client: redis.Redis) -> JobStore:
    return JobStore.from_settings(settings, client)


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Celery:
    return make_celery(settings)


@pytest.fixture(scope="module")
def storage(settings: Settings) -> MaskStorage:
    return MaskStorage.from_settings(settings)


@pytest.fixture(scope="module")
def worker(
    settings: Settings, client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A worker process for ``REGION``, up once its heartbeat is in Redis; yields its log file."""
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    process = start_worker(settings, REGION, log_path)
    wait_until(lambda: bool(live_workers(client, Keys(settings.key_prefix), REGION)), "worker heartbeat")
    yield log_path
    stop_processes([process])
