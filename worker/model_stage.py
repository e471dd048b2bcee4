"""The worker's model stage: one thread runs the model work of every job the worker holds.

Job threads download, decode, encode and upload beside it and hand it their decoded images. It takes the
ready jobs of one pipeline together, up to ``max_batch`` (waiting at most ``max_wait_s`` for more after
the first), so their image encoders run as one batch (``Pipeline.run_many``); each job's results equal its
results alone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from smartseg.shared.errors import PipelineFailed
from smartseg.worker.pipeline.base import ImageJob, ImageRun, Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """A job's turn on the model: its run, the seconds it waited for the model and the seconds the model
    worked on its batch."""

    run: ImageRun
    waited_s: float
    batch_s: float
    batch_size: int


@dataclass
class _Request:
    pipeline: Pipeline
    job: ImageJob
    before_turn: Callable[[], None]
    queued_at: float = field(default_factory=time.perf_counter)
    future: Future[Turn] = field(default_factory=Future)


class ModelStage:
    def __init__(self, max_batch: int = 1, max_wait_s: float = 0.005) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._later: deque[_Request] = deque()  # another pipeline's jobs, taken out while batching
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, pipeline: Pipeline, job: ImageJob, before_turn: Callable[[], None]) -> Turn:
        """The job's model work, when its turn comes. ``before_turn`` (the job's stage-boundary check)
        runs right before it: what it raises (a cancel, a lost lease) is raised here and the model never
        runs the job. A pipeline's own error is raised as ``PipelineFailed``."""
        request = _Request(pipeline, job, before_turn)
        self._ensure_started()
        self._requests.put(request)
        return request.future.result()

    def waiting(self) -> int:
        """Jobs handed to the stage and not yet taken into a batch."""
        return self._requests.qsize() + len(self._later)

    def _ensure_started(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="model-stage", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            ready = []
            for request in batch:
                try:
                    request.before_turn()
                except BaseException as exc:  # a cancel or a lost lease: the job ends without the model
                    request.future.set_exception(exc)
                else:
                    ready.append(request)
            try:
                if ready:
                    self._run(ready)
            except Exception as exc:  # a bug here must not leave the jobs waiting forever
                log.exception("model stage failed")
                for request in ready:
                    if not request.future.done():
                        request.future.set_exception(exc)

    def _next_batch(self) -> list[_Request]:
        first = self._later.popleft() if self._later else self._requests.get()
        batch = [first]
        kept = deque[_Request]()
        while self._later and len(batch) < self.max_batch:  # held back earlier: no waiting for them
            request = self._later.popleft()
            (batch if request.pipeline is first.pipeline else kept).append(request)
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                request = self._requests.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            (batch if request.pipeline is first.pipeline else kept).append(request)
        self._later.extendleft(reversed(kept))
        return batch

    def _run(self, batch: list[_Request]) -> None:
        pipeline = batch[0].pipeline
        started = time.perf_counter()
        try:
            runs = pipeline.run_many([request.job for request in batch])
        except Exception as exc:
            if len(batch) > 1:  # one job's image may be at fault: each runs alone, and only it fails
                log.warning("a batch of %d failed (%s); running each alone", len(batch), type(exc).__name__)
                for request in batch:
                    self._run([request])
                return
            failure = PipelineFailed(f"pipeline {pipeline.name} failed: {type(exc).__name__}")
            failure.__cause__ = exc
            batch[0].future.set_exception(failure)
            return
        batch_s = time.perf_counter() - started
        for request, run in zip(batch, runs, strict=True):
            waited = started - request.queued_at
            request.future.set_result(Turn(run, round(waited, 4), round(batch_s, 4), len(batch)))
