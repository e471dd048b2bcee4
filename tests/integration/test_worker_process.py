"""A real Celery worker process against real Redis and S3: runs jobs, drops stale and duplicate messages."""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from celery import Celery
from PIL import Image

from shared.celery_app import dispatch_segment, make_celery
from shared.jobstore import JobRecord, JobStatus, JobStore
from shared.launcher import child_environment, stop_processes, wait_until
from shared.regions import live_workers
from shared.scenes import generate_scene
from shared.settings import Settings
from shared.storage import MaskStorage

pytestmark = pytest.mark.integration
REGION = "us-east"
JOB_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(key_prefix=f"int-{secrets.token_hex(4)}", regions=[REGION])


def start_worker(settings: Settings, region: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=child_environment(settings, SMARTSEG_REGION=region),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory, store: JobStore) -> Iterator[Path]:
    log_path = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    process = start_worker(settings, REGION, log_path)
    wait_until(lambda: bool(live_workers(store.redis, store.keys, REGION)), "worker heartbeat")
    yield log_path
    stop_processes([process])


@pytest.fixture(scope="module")
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Celery:
    return make_celery(settings)


@pytest.fixture(scope="module")
def storage(settings: Settings) -> MaskStorage:
    return MaskStorage.from_settings(settings)


def data_url_of_scene(seed: int) -> tuple[str, object]:
    import base64

    scene = generate_scene(seed=seed)
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), scene


def new_job(store: JobStore, image_url: str, prompts: list[str], owner: str = "owner1") -> JobRecord:
    options = {
        "box_threshold": 0.3,
        "text_threshold": 0.25,
        "max_masks": 3,
        "output_format": "png",
        "pipeline": "lite",
    }
    request = {
        "image_url": image_url,
        "prompts": prompts,
        "region": REGION,
        "priority": "interactive",
        "options": options,
    }
    job, _ = store.create(
        owner=owner, request=request, region=REGION, priority="interactive", filename_stem="image"
    )
    return job


def wait_terminal(store: JobStore, job_id: str) -> JobRecord:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job is not None and job.status.is_terminal():
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S}s: {store.get(job_id)}")


def test_worker_runs_a_job_and_uploads_the_mask(
    worker: Path, store: JobStore, celery_app: Celery, storage: MaskStorage
) -> None:
    url, scene = data_url_of_scene(3)
    target = scene.shapes[0]
    job = new_job(store, url, [f"{target.color} {target.kind}"])
    dispatch_segment(celery_app, job.id, job.token, REGION, "interactive")
    done = wait_terminal(store, job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    mask = np.asarray(Image.open(io.BytesIO(storage.get(done.outputs[0]["key"])))) > 0
    assert (mask & target.mask).sum() / (mask | target.mask).sum() >= 0.9


def test_stale_and_duplicate_messages_are_dropped(worker: Path, store: JobStore, celery_app: Celery) -> None:
    url, _ = data_url_of_scene(4)
    job = new_job(store, url, ["largest shape"], owner="owner-dup")
    dispatch_segment(celery_app, job.id, "stale-token", REGION, "interactive")
    dispatch_segment(celery_app, job.id, job.token, REGION, "interactive")
    dispatch_segment(celery_app, job.id, job.token, REGION, "interactive")  # a duplicate delivery
    done = wait_terminal(store, job.id)
    # A marker job behind the duplicates: once it is done, the single worker has handled every message.
    marker = new_job(store, url, ["largest shape"], owner="owner-marker")
    dispatch_segment(celery_app, marker.id, marker.token, REGION, "interactive")
    wait_terminal(store, marker.id)
    assert store.get(job.id) == done
    assert done.status is JobStatus.SUCCEEDED
    assert store.usage("owner-dup") == (1, 120_000)
    log = worker.read_text()
    assert f"dropped message for {job.id}: stale" in log
    assert f"dropped message for {job.id}: not_queued" in log


def test_bad_image_fails_with_code(worker: Path, store: JobStore, celery_app: Celery) -> None:
    job = new_job(store, "data:image/png;base64,bm90IGFuIGltYWdl", ["x"], owner="owner-bad")
    dispatch_segment(celery_app, job.id, job.token, REGION, "interactive")
    done = wait_terminal(store, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "image_invalid"
    assert store.usage("owner-bad") == (0, 0)


def test_interactive_queue_is_consumed_before_batch(
    settings: Settings, store: JobStore, celery_app: Celery, tmp_path: Path
) -> None:
    region = "int-prio"
    prio_settings = settings.updated(regions=[REGION, region])
    prio_app = make_celery(prio_settings)
    url, _ = data_url_of_scene(5)
    batch = [new_job(store, url, ["largest shape"], owner="owner-prio") for _ in range(3)]
    for job in batch:
        dispatch_segment(prio_app, job.id, job.token, region, "batch")
    interactive = new_job(store, url, ["largest shape"], owner="owner-prio")
    dispatch_segment(prio_app, interactive.id, interactive.token, region, "interactive")
    # The worker starts only now, with batch work queued ahead of the interactive job.
    process = start_worker(prio_settings, region, tmp_path / "worker.log")
    try:
        done = [wait_terminal(store, job.id) for job in [interactive, *batch]]
    finally:
        stop_processes([process])
    started = [job.started_at or 0.0 for job in done]
    assert started[0] < min(started[1:])
