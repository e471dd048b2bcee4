"""Helpers for tests that run jobs through a real worker process: start it, make jobs, wait for them."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

from smartseg.cli.launcher import child_environment
from smartseg.shared.celery_app import SEGMENT_TASK
from smartseg.shared.jobspec import JobOptions, JobSpec, Priority, RegionPolicy
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.keys import INTERACTIVE, queue_name
from smartseg.shared.settings import Settings
from smartseg.testing.scenes import Scene, generate_scene

REGION = "us-east"
JOB_TIMEOUT_S = 30.0


def start_worker(settings: Settings, region: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "smartseg.worker"],
            env=child_environment(settings, SMARTSEG_REGION=region),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def data_url_of_scene(seed: int) -> tuple[str, Scene]:
    scene = generate_scene(seed=seed)
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), scene


def new_job(
    store: JobStore,
    image_url: str,
    prompts: list[str],
    owner: str = "owner1",
    *,
    pipeline: str = "lite",
    priority: Priority = INTERACTIVE,
    region_policy: RegionPolicy = "prefer",
    **options: Any,
) -> JobRecord:
    """A queued job in ``REGION``, as the API would create it (its message is the test's to send)."""
    spec = JobSpec(
        image_url=image_url,
        prompts=tuple(prompts),
        pipeline=pipeline,
        options=JobOptions(**options),
        region=REGION,
        region_policy=region_policy,
        priority=priority,
    )
    job, _ = store.create(owner=owner, spec=spec, region=REGION, filename_stem="image")
    return job


def send_message(app: Celery, job_id: str, token: str, region: str, priority: str, **headers: Any) -> None:
    """A segment message with any token and headers: stale, duplicate or old-style ones."""
    app.send_task(
        SEGMENT_TASK,
        kwargs={"job_id": job_id, "token": token},
        queue=queue_name(region, priority),
        headers=headers,
    )


def wait_terminal(store: JobStore, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job is not None and job.status.is_terminal():
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s: {store.get(job_id)}")
