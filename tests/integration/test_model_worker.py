"""A real worker process serving every pipeline, its tiny models copied from an S3 prefix at start:
jobs through each pipeline, the cache across jobs, every output format, and start-up refusals."""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery
from PIL import Image

from smartseg.cli.launcher import stop_processes, wait_until
from smartseg.shared.celery_app import send_job
from smartseg.shared.jobstore import JobRecord, JobStatus, JobStore
from smartseg.shared.keys import Keys
from smartseg.shared.mask_encoding import decode_rle, rasterize_polygons
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage, s3_client
from smartseg.worker.model_weights import push_to_s3
from tests.integration.worker_jobs import REGION, data_url_of_scene, new_job, start_worker, wait_terminal

pytestmark = pytest.mark.integration
PIPELINES = ["lite", "grounded-sam", "grounded-sam2", "sam3"]
START_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def settings(
    service_settings: Settings, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    uri = f"s3://{service_settings.s3_bucket}/models-{secrets.token_hex(4)}"
    client = s3_client(service_settings, service_settings.require_s3_endpoint())
    for folder in tiny_model_dir.iterdir():
        push_to_s3(folder, uri, client)
    return service_settings.updated(
        key_prefix=f"models-{secrets.token_hex(4)}",
        regions=[REGION],
        pipelines=PIPELINES,
        model_uri=uri,
        model_dir=str(tmp_path_factory.mktemp("worker-models")),  # empty: filled from S3 at start
        torch_threads=1,
    )


@pytest.fixture(scope="module")
def worker(
    settings: Settings, client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    log_path = Path(tmp_path_factory.mktemp("model-worker")) / "worker.log"
    process = start_worker(settings, REGION, log_path)
    try:
        wait_until(
            lambda: (
                bool(live_workers(client, Keys(settings.key_prefix), REGION)) or process.poll() is not None
            ),
            "model worker heartbeat",
            START_TIMEOUT_S,
        )
        assert process.poll() is None, log_path.read_text()
        yield log_path
    finally:
        stop_processes([process])


def run(store: JobStore, app: Celery, url: str, prompts: list[str], **options: object) -> JobRecord:
    job = new_job(store, url, prompts, owner="owner-models", **options)
    send_job(app, job)
    return wait_terminal(store, job.id)


def test_the_worker_advertises_what_it_loaded(
    worker: Path, store: JobStore, client: redis.Redis, settings: Settings
) -> None:
    [beat] = live_workers(client, store.keys, REGION)
    assert sorted(beat["pipelines"]) == sorted(PIPELINES)
    assert sorted(
        path.name for path in Path(settings.model_dir).iterdir() if not path.name.startswith(".")
    ) == [
        "grounding-dino-tiny",
        "sam-vit-base",
        "sam2.1-hiera-tiny",
        "sam3",
    ]


@pytest.mark.parametrize("pipeline", ["grounded-sam", "grounded-sam2", "sam3"])
def test_each_model_pipeline_runs_and_caches_across_jobs(
    pipeline: str, worker: Path, store: JobStore, celery_app: Celery, storage: MaskStorage
) -> None:
    url, scene = data_url_of_scene(20 + len(pipeline))
    prompts = ["shoe", "left mug", "cat", "largest dog"]
    options = {"pipeline": pipeline, "box_threshold": 0.0, "text_threshold": 0.0, "max_masks": 2}
    first = run(store, celery_app, url, prompts, **options)
    assert first.status is JobStatus.SUCCEEDED, first.error
    assert first.metrics["image_encoder_runs"] == 1  # four prompts, one image encoding
    if pipeline != "sam3":
        assert first.metrics["detector_runs"] == 1  # four prompts, one detector pass
    assert {output["prompt"] for output in first.outputs} == set(prompts)
    for output in first.outputs:
        assert output["model"] != "lite" and 0.0 <= output["score"] <= 1.0
        mask = np.asarray(Image.open(io.BytesIO(storage.get(output["key"]))))
        assert mask.shape == (scene.image.height, scene.image.width) and set(np.unique(mask)) <= {0, 255}
    again = run(store, celery_app, url, prompts, **options)
    assert again.status is JobStatus.SUCCEEDED, again.error
    assert (again.metrics["image_encoder_runs"], again.metrics["detector_runs"]) == (0, 0)
    assert [o["score"] for o in again.outputs] == [o["score"] for o in first.outputs]


def test_every_output_format_round_trips(
    worker: Path, store: JobStore, celery_app: Celery, storage: MaskStorage
) -> None:
    url, scene = data_url_of_scene(31)
    target = scene.shapes[0]
    prompt = [f"{target.color} {target.kind}"]
    jobs = {
        fmt: run(store, celery_app, url, prompt, output_format=fmt)
        for fmt in ("png", "rle", "polygon", "cutout")
    }
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs.values())
    outputs = {fmt: job.outputs[0] for fmt, job in jobs.items()}
    png = np.asarray(Image.open(io.BytesIO(storage.get(outputs["png"]["key"])))) > 0
    assert outputs["rle"]["filename"] == "image.mask-0.rle.json"
    assert outputs["rle"]["content_type"] == "application/json"
    rle = decode_rle(json.loads(storage.get(outputs["rle"]["key"])))
    assert np.array_equal(rle, png)
    polygon = rasterize_polygons(json.loads(storage.get(outputs["polygon"]["key"])))
    assert (polygon & png).sum() / (polygon | png).sum() >= 0.95
    cutout = np.asarray(Image.open(io.BytesIO(storage.get(outputs["cutout"]["key"]))))
    assert cutout.shape == (*png.shape, 4)
    assert np.array_equal(cutout[..., 3] > 0, png)
    assert np.array_equal(cutout[..., :3][png], np.asarray(scene.image)[png])
    assert {o["area"] for o in outputs.values()} == {int(png.sum())}


def test_a_corrupt_weights_file_stops_the_worker_at_start(
    settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "models"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "grounding-dino-tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    log_path = tmp_path / "worker.log"
    process = start_worker(settings.updated(model_uri=None, model_dir=str(broken)), REGION, log_path)
    try:
        assert process.wait(timeout=START_TIMEOUT_S) != 0
    except subprocess.TimeoutExpired:
        stop_processes([process])
        raise
    log = log_path.read_text()
    assert re.search(r"cannot start: .*" + re.escape(str(weights)), log), log


def test_a_missing_model_stops_the_worker_at_start(settings: Settings, tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    process = start_worker(
        settings.updated(model_uri=None, model_dir=str(tmp_path / "none")), REGION, log_path
    )
    assert process.wait(timeout=START_TIMEOUT_S) != 0
    assert "grounding-dino-tiny" in log_path.read_text()
