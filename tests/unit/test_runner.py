"""JobRunner on fakeredis with an in-memory storage and fake pipelines: stages, failures, cancel, takeover."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Sequence

import fakeredis
import numpy as np
import pytest
from PIL import Image

from smartseg.shared.errors import StorageUnavailable
from smartseg.shared.fetch import FetchLimits, ImageFetcher
from smartseg.shared.jobspec import JobOptions, JobSpec
from smartseg.shared.jobstore import CancelResult, JobRecord, JobStatus, JobStore
from smartseg.shared.keys import Keys
from smartseg.worker.pipeline.base import ImageJob, ImageRun, PromptResult, Segment
from smartseg.worker.runner import JobRunner

WIDTH, HEIGHT = 40, 30


class MemoryStorage:
    def __init__(self, fail: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploaded: list[str] = []  # every key ever put, deleted or not: what a run wrote
        self.fail = fail

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail:
            raise StorageUnavailable("down")
        self.objects[key] = data
        self.uploaded.append(key)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class FakePipeline:
    """Returns a fixed square for every prompt but 'nothing'; runs a hook mid-inference."""

    name = "fake"

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.during = during
        self.runs = 0

    def counters(self) -> dict[str, int]:
        return {"detector_runs": self.runs, "image_encoder_runs": self.runs}

    def run_many(self, jobs: Sequence[ImageJob]) -> list[ImageRun]:
        counters = {"detector_runs": 1, "image_encoder_runs": 1}
        return [ImageRun(self.run(job.image, job.prompts, job.options), counters) for job in jobs]

    def run(self, image: np.ndarray, prompts: Sequence[str], options: JobOptions) -> list[PromptResult]:
        self.runs += 1
        self.during()
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[5:15, 10:20] = True
        return [
            PromptResult(
                prompt,
                [] if prompt == "nothing" else [Segment(prompt, "thing", 0.9, (10, 5, 20, 15), mask, "fake")],
            )
            for prompt in prompts
        ]


def png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, Keys("t"), 3600, 120_000)


def make_runner(
    store: JobStore, storage: MemoryStorage, pipeline: FakePipeline, decode_max_side: int = 2048
) -> JobRunner:
    # Every stage boundary checks the lease (no coalescing), so a test sees exactly where a run stopped.
    fetcher = ImageFetcher(FetchLimits())
    pipelines = {"fake": pipeline}
    return JobRunner(
        store, storage, fetcher, pipelines, "w1", 5.0, 10_000, decode_max_side, check_interval_s=0
    )  # type: ignore[arg-type]


def new_job(store: JobStore, prompts: list[str], image_url: str | None = None) -> JobRecord:
    spec = JobSpec(image_url=image_url or png_data_url(), prompts=tuple(prompts), pipeline="fake")
    return store.create(owner="o", spec=spec, region="r", filename_stem="photo")[0]


def test_success_uploads_masks_and_records_outputs(store: JobStore) -> None:
    storage = MemoryStorage()
    job = new_job(store, ["a", "nothing", "b"])
    assert make_runner(store, storage, FakePipeline()).run(job.id, job.token, "fake") == "succeeded"
    done = store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert [o["filename"] for o in done.outputs] == ["photo.mask-0.png", "photo.mask-1.png"]
    assert [o["prompt"] for o in done.outputs] == ["a", "b"]
    assert done.outputs[0]["box"] == [10, 5, 20, 15] and done.outputs[0]["area"] == 100
    assert [r["result"] for r in done.prompt_results] == ["match", "no_match", "match"]
    mask = np.asarray(Image.open(io.BytesIO(storage.objects[done.outputs[0]["key"]])))
    assert mask.shape == (HEIGHT, WIDTH) and mask.sum() == 100 * 255
    assert {"queue_s", "fetch_s", "decode_s", "inference_s", "upload_s", "total_s"} <= set(done.metrics)


@pytest.mark.parametrize("output_format", ["png", "cutout"])
def test_an_image_over_the_working_size_gets_masks_at_its_own_size(
    store: JobStore, output_format: str
) -> None:
    storage = MemoryStorage()
    spec = JobSpec(
        image_url=png_data_url(),
        prompts=("a",),
        pipeline="fake",
        options=JobOptions(output_format=output_format),
    )
    job = store.create(owner="o", spec=spec, region="r", filename_stem="photo")[0]
    # The pipeline sees the image at 20x15 and marks rows 5-14, columns 10-19: the lower right quarter.
    runner = make_runner(store, storage, FakePipeline(), decode_max_side=WIDTH // 2)
    assert runner.run(job.id, job.token, "fake") == "succeeded"
    output = store.get(job.id).outputs[0]
    assert (output["width"], output["height"]) == (WIDTH, HEIGHT)
    assert output["box"] == [20, 10, 40, 30] and output["area"] == 20 * 20
    mask = np.asarray(Image.open(io.BytesIO(storage.objects[output["key"]])))
    assert mask.shape[:2] == (HEIGHT, WIDTH)
    if output_format == "cutout":  # the source pixels at full size, the mask as alpha
        assert tuple(mask[HEIGHT - 1, WIDTH - 1]) == (200, 30, 30, 255) and mask[0, 0, 3] == 0


def test_stale_token_is_dropped_without_work(store: JobStore) -> None:
    job = new_job(store, ["a"])
    assert make_runner(store, MemoryStorage(), FakePipeline()).run(job.id, "old-token", "fake") == "stale"
    assert store.get(job.id).status is JobStatus.QUEUED


def test_undecodable_image_fails_with_its_code(store: JobStore) -> None:
    job = new_job(store, ["a"], image_url="data:image/png;base64," + base64.b64encode(b"garbage").decode())
    assert make_runner(store, MemoryStorage(), FakePipeline()).run(job.id, job.token, "fake") == "failed"
    assert store.get(job.id).error["code"] == "image_invalid"


def test_storage_outage_fails_with_storage_unavailable(store: JobStore) -> None:
    job = new_job(store, ["a"])
    assert (
        make_runner(store, MemoryStorage(fail=True), FakePipeline()).run(job.id, job.token, "fake")
        == "failed"
    )
    assert store.get(job.id).error["code"] == "storage_unavailable"
    assert store.usage("o") == (0, 0)


def test_pipeline_crash_fails_the_job(store: JobStore) -> None:
    def boom() -> None:
        raise RuntimeError("model exploded")

    job = new_job(store, ["a"])
    assert make_runner(store, MemoryStorage(), FakePipeline(boom)).run(job.id, job.token, "fake") == "failed"
    assert store.get(job.id).error["code"] == "pipeline_failed"


def test_cancel_while_running_stops_at_the_next_stage_and_discards(store: JobStore) -> None:
    storage = MemoryStorage()
    job = new_job(store, ["a"])
    runner = make_runner(store, storage, FakePipeline(lambda: store.cancel("o", job.id)))
    assert runner.run(job.id, job.token, "fake") == "canceled"
    done = store.get(job.id)
    assert done.status is JobStatus.CANCELED and done.outputs == []
    assert storage.uploaded == []  # stopped at the boundary after inference: nothing was written
    assert store.usage("o") == (0, 0)


def test_a_cancel_after_the_last_check_still_ends_canceled_and_discards(store: JobStore) -> None:
    storage = MemoryStorage()
    job = new_job(store, ["a"])
    runner = make_runner(store, storage, FakePipeline())
    original_put = storage.put

    def put_then_cancel(key: str, data: bytes, content_type: str) -> None:
        original_put(key, data, content_type)
        store.cancel("o", job.id)  # lands during the upload, after the last stage boundary

    storage.put = put_then_cancel  # type: ignore[method-assign]
    assert runner.run(job.id, job.token, "fake") == "canceled"
    assert storage.uploaded and storage.objects == {}  # uploaded, then discarded by the final write
    assert store.get(job.id).outputs == [] and store.usage("o") == (0, 0)


def test_lost_lease_writes_nothing(store: JobStore, client: fakeredis.FakeRedis) -> None:
    storage = MemoryStorage()
    job = new_job(store, ["a"])

    def taken_over() -> None:  # another attempt now holds the job under a new token
        client.hset(store.keys.job(job.id), "token", "new-token")

    assert make_runner(store, storage, FakePipeline(taken_over)).run(job.id, job.token, "fake") == "lost"
    assert store.get(job.id).status is JobStatus.RUNNING
    assert storage.uploaded == []  # stopped at the boundary after inference: nothing was written


def test_a_job_for_a_pipeline_not_served_here_is_handed_back_unclaimed(store: JobStore) -> None:
    job = new_job(store, ["a"])
    runner = make_runner(store, MemoryStorage(), FakePipeline())
    assert runner.run(job.id, job.token, "sam3") == "handed_back"
    waiting = store.get(job.id)
    assert (waiting.status, waiting.attempt, waiting.worker) == (JobStatus.QUEUED, 1, None)
    assert store.owed_messages() == [job.id]  # due now: the router sends it where sam3 is served
    assert runner.run(job.id, "old-token", "sam3") == "stale"
    assert runner.run(job.id, job.token, "fake") == "succeeded"


def test_jobs_held_ahead_wait_for_the_model_and_a_cancel_there_skips_it(store: JobStore) -> None:
    """Three jobs in three threads (a worker with two jobs ahead): one on the model, two waiting for it.
    The heartbeat counts all three; a cancel of a waiting job ends it before the model runs it; each
    job's model passes are its own."""
    on_model, release = threading.Event(), threading.Event()

    def hold_the_model() -> None:
        on_model.set()
        assert release.wait(10)

    pipeline = FakePipeline(hold_the_model)
    storage = MemoryStorage()
    runner = make_runner(store, storage, pipeline)
    jobs = [new_job(store, ["a"]) for _ in range(3)]
    outcomes: dict[str, str] = {}

    def run(job: JobRecord) -> None:
        outcomes[job.id] = runner.run(job.id, job.token, "fake")

    first = threading.Thread(target=run, args=(jobs[0],))
    first.start()
    assert on_model.wait(10)
    waiting = [threading.Thread(target=run, args=(job,)) for job in jobs[1:]]
    for thread in waiting:
        thread.start()
    until(lambda: runner.model.waiting() == 2)  # the other two wait for the model, downloaded and decoded
    assert runner.status() == {"busy": True, "current_job": jobs[0].id, "jobs": 3}
    assert store.cancel("o", jobs[1].id) is CancelResult.REQUESTED  # flagged while it waits
    release.set()
    for thread in [first, *waiting]:
        thread.join(10)
    assert [outcomes[job.id] for job in jobs] == ["succeeded", "canceled", "succeeded"]
    assert pipeline.runs == 2  # the canceled job never reached the model
    done = [store.get(job.id) for job in jobs]
    assert done[1].outputs == [] and store.usage("o")[0] == 2
    assert [job.metrics.get("detector_runs") for job in done] == [1, None, 1]
    assert done[2].metrics["model_wait_s"] > 0
    assert runner.status() == {"busy": False, "current_job": None, "jobs": 0}


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
