"""Fixtures for modules that define their own ``settings``: a job store, a Celery app and mask storage."""

from __future__ import annotations

import pytest
from celery import Celery

from shared.celery_app import make_celery
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import MaskStorage


@pytest.fixture(scope="module")
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Celery:
    return make_celery(settings)


@pytest.fixture(scope="module")
def storage(settings: Settings) -> MaskStorage:
    return MaskStorage.from_settings(settings)
