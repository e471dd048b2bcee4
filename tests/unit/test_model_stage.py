"""The worker's model stage with fake pipelines: batches of ready jobs, one pipeline per batch, a failing
job failing alone, a job refused at its turn never reaching the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from smartseg.shared.errors import JobCanceled, PipelineFailed
from smartseg.shared.jobspec import JobOptions
from smartseg.worker.model_stage import ModelStage, Turn
from smartseg.worker.pipeline.base import ImageJob, ImageRun, PromptResult


class RecordingPipeline:
    """Answers each job with its own prompt; records the prompts of each batch; ``hold`` blocks a batch
    that contains it until released; ``broken`` prompts make a batch that holds them raise."""

    def __init__(self, name: str, hold: str = "", broken: str = "") -> None:
        self.name = name
        self.hold, self.broken = hold, broken
        self.held, self.release = threading.Event(), threading.Event()
        self.batches: list[list[str]] = []

    def run_many(self, jobs: Sequence[ImageJob]) -> list[ImageRun]:
        prompts = [job.prompts[0] for job in jobs]
        self.batches.append(prompts)
        if self.hold in prompts:
            self.held.set()
            assert self.release.wait(10)
        if self.broken in prompts:
            raise RuntimeError("bad image")
        return [ImageRun([PromptResult(prompt, [])], {"image_encoder_runs": 1}) for prompt in prompts]


def job(prompt: str) -> ImageJob:
    return ImageJob(np.zeros((4, 4, 3), dtype=np.uint8), (prompt,), JobOptions())


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def submit_while_busy(
    stage: ModelStage, first: RecordingPipeline, later: list[tuple[RecordingPipeline, str]]
) -> list[Turn | BaseException]:
    """Keep the stage busy with ``first``'s held job, hand it ``later`` meanwhile, then release it."""
    with ThreadPoolExecutor(len(later) + 1) as pool:
        pool.submit(stage.run, first, job(first.hold), lambda: None)  # type: ignore[arg-type]
        assert first.held.wait(10)
        futures = []
        for count, (pipeline, prompt) in enumerate(later, start=1):
            futures.append(pool.submit(stage.run, pipeline, job(prompt), lambda: None))  # type: ignore[arg-type]
            until(lambda count=count: stage.waiting() == count)  # queued in this order
        first.release.set()
        return [future.exception() or future.result() for future in futures]


def test_ready_jobs_of_one_pipeline_run_as_one_batch_each_with_its_own_results() -> None:
    stage = ModelStage(max_batch=4, max_wait_s=0.0)
    pipeline = RecordingPipeline("p", hold="first")
    turns = submit_while_busy(stage, pipeline, [(pipeline, f"job-{n}") for n in range(5)])
    assert pipeline.batches == [["first"], ["job-0", "job-1", "job-2", "job-3"], ["job-4"]]
    assert all(isinstance(turn, Turn) for turn in turns)
    assert [turn.run.results[0].prompt for turn in turns] == [f"job-{n}" for n in range(5)]  # type: ignore[union-attr]
    assert [turn.batch_size for turn in turns] == [4, 4, 4, 4, 1]  # type: ignore[union-attr]
    assert all(turn.waited_s > 0 for turn in turns)  # type: ignore[union-attr]


def test_a_batch_holds_one_pipeline_and_the_others_keep_their_order() -> None:
    stage = ModelStage(max_batch=8, max_wait_s=0.0)
    a, b = RecordingPipeline("a", hold="first"), RecordingPipeline("b")
    submit_while_busy(stage, a, [(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")])
    assert a.batches == [["first"], ["a1", "a2"]] and b.batches == [["b1", "b2"]]


def test_a_job_that_breaks_its_batch_fails_alone() -> None:
    stage = ModelStage(max_batch=4, max_wait_s=0.0)
    pipeline = RecordingPipeline("p", hold="first", broken="bad")
    turns = submit_while_busy(stage, pipeline, [(pipeline, "ok-1"), (pipeline, "bad"), (pipeline, "ok-2")])
    assert isinstance(turns[1], PipelineFailed) and isinstance(turns[1].__cause__, RuntimeError)
    assert isinstance(turns[0], Turn) and isinstance(turns[2], Turn)
    assert pipeline.batches[1:] == [["ok-1", "bad", "ok-2"], ["ok-1"], ["bad"], ["ok-2"]]


def test_a_job_refused_at_its_turn_never_reaches_the_model() -> None:
    stage = ModelStage(max_batch=4, max_wait_s=0.0)
    pipeline = RecordingPipeline("p")

    def canceled() -> None:
        raise JobCanceled("seg_x")

    with pytest.raises(JobCanceled):
        stage.run(pipeline, job("canceled"), canceled)  # type: ignore[arg-type]
    assert stage.run(pipeline, job("fine"), lambda: None).run.results[0].prompt == "fine"  # type: ignore[arg-type]
    assert pipeline.batches == [["fine"]]


def test_the_stage_waits_a_moment_for_more_jobs_after_the_first() -> None:
    stage = ModelStage(max_batch=2, max_wait_s=2.0)
    pipeline = RecordingPipeline("p")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stage.run, pipeline, job("one"), lambda: None)  # type: ignore[arg-type]
        until(lambda: stage.waiting() == 0 and not first.done())  # taken, waiting for a second
        second = pool.submit(stage.run, pipeline, job("two"), lambda: None)  # type: ignore[arg-type]
        assert first.result(10).batch_size == 2 and second.result(10).batch_size == 2
    assert pipeline.batches == [["one", "two"]]
