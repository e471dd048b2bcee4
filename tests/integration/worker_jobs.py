"""Helpers for tests that run jobs through a real worker process: start it, make jobs, wait for them."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.jobstore import JobRecord, JobStore
from shared.launcher import child_environment
from shared.scenes import Scene, generate_scene
from shared.settings import Settings

REGION = "us-east"
JOB_TIMEOUT_S = 30.0
DEFAULT_OPTIONS = {
    "box_threshold": 0.3,
    "text_threshold": 0.25,
    "max_masks": 3,
    "output_format": "png",
    "pipeline": "lite",
}


def start_worker(settings: Settings, region: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
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
    store: JobStore, image_url: str, prompts: list[str], owner: str = "owner1", **options: Any
) -> JobRecord:
    options = {**DEFAULT_OPTIONS, **options}
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


def wait_terminal(store: JobStore, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job is not None and job.status.is_terminal():
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s: {store.get(job_id)}")
