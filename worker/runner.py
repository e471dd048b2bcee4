"""Runs jobs: claim, fetch, decode, segment, encode, upload, finish, with a cancel check between stages.

Several jobs may run at once, each in its own thread (the worker's jobs ahead): their downloads, decodes,
encodes and uploads go on beside each other, and the model stage (one thread) runs their model work, the
ready jobs of one pipeline together."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from smartseg.shared.errors import JobCanceled, JobFailure, LeaseLost, SmartsegError
from smartseg.shared.fetch import ImageFetcher
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.mask_encoding import encode_mask
from smartseg.shared.metrics import JOB_STAGE_SECONDS
from smartseg.shared.storage import MaskStorage, object_key
from smartseg.worker.image import DEFAULT_MAX_SIDE, DecodedImage, decode_image
from smartseg.worker.lease import MIN_CHECK_INTERVAL_S, Lease, LeaseRenewer
from smartseg.worker.model_stage import ModelStage
from smartseg.worker.pipeline.base import ImageJob, Pipeline, PromptResult, mask_box

log = logging.getLogger(__name__)

# The run's measured stages (its record's metrics) as smartseg_job_stage_seconds names them.
STAGE_METRICS = {
    "queue_s": "queue_wait",
    "fetch_s": "fetch",
    "decode_s": "decode",
    "inference_s": "inference",
    "upload_s": "upload",
}


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        storage: MaskStorage,
        fetcher: ImageFetcher,
        pipelines: Mapping[str, Pipeline],
        worker_id: str,
        lease_s: float,
        max_image_pixels: int,
        decode_max_side: int = DEFAULT_MAX_SIDE,
        region: str = "",
        check_interval_s: float = MIN_CHECK_INTERVAL_S,
        model: ModelStage | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.fetcher = fetcher
        self.pipelines = pipelines
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.leases = LeaseRenewer(store, lease_s, check_interval_s)
        self.max_image_pixels = max_image_pixels
        self.decode_max_side = decode_max_side  # the pipeline's working size; masks return at full size
        self.region = region  # recorded on each job it claims
        self._held: dict[str, str] = {}  # job id -> token of each run claimed here and not ended
        self._held_lock = threading.Lock()
        self.model = model or ModelStage()  # every job's model work, a batch of ready jobs at a time
        self._stopping = threading.Event()

    def held(self) -> dict[str, str]:
        """Job id -> token of the runs in progress here (what the heartbeat shows, a shutdown hands back)."""
        with self._held_lock:
            return dict(self._held)

    def stop_taking_jobs(self) -> None:
        """From now on every message is handed back unclaimed (a shutdown began). A threads pool may still
        be handed messages while it drains; the router sends them to a worker that stays."""
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        held = list(self.held())
        # `jobs` counts the jobs held ahead too: placement adds them to the region's queued work.
        return {"busy": bool(held), "current_job": held[0] if held else None, "jobs": len(held)}

    def run(self, job_id: str, token: str, pipeline_name: str) -> str:
        """Run the job this message names; returns what happened, for the log.

        ``pipeline_name`` is the one the message says the job needs (its header, from the job's spec): if
        this worker does not serve it (the region's workers changed since the job was placed), the job is
        handed back unclaimed, and the router sends it where it is served."""
        pipeline = self.pipelines.get(pipeline_name)
        if pipeline is None or self._stopping.is_set():
            handed = self.store.hand_back(job_id, token)
            why = "shutting down" if pipeline else f"needs pipeline {pipeline_name}, not served here"
            log.warning("job %s %s: %s", job_id, why, "handed back" if handed else "stale message dropped",
                        extra=self._fields(job_id))  # fmt: skip
            return "handed_back" if handed else "stale"
        claim, job = self.store.claim_record(job_id, token, self.worker_id, self.lease_s, self.region)
        if job is None:
            log.info("dropped message for %s: %s", job_id, claim.value, extra=self._fields(job_id))
            return claim.value
        claimed = time.perf_counter()
        # Both times are the Redis clock's (the claim and the create wrote them).
        queue_s = (job.started_at or job.created_at) - job.created_at
        metrics: dict[str, float] = {"queue_s": round(queue_s, 4)}
        log.info(
            "job %s claimed, attempt %d, %.3fs after it was created",
            job_id,
            job.attempt,
            queue_s,
            extra=self._fields(job_id, stage="queue_wait", duration_s=metrics["queue_s"]),
        )
        uploaded: list[str] = []
        with self._held_lock:
            self._held[job_id] = token
        try:
            with self.leases.hold(job_id, token) as lease:
                try:
                    outputs, prompt_results = self._stages(job, pipeline, lease, metrics, uploaded)
                    metrics["total_s"] = round(queue_s + time.perf_counter() - claimed, 4)
                    ended = self.store.succeed(
                        job, token, outputs=outputs, prompt_results=prompt_results, metrics=metrics
                    )
                except JobCanceled:
                    ended = self.store.acknowledge_cancel(job, token)
                except LeaseLost:
                    ended = None
                except JobFailure as exc:
                    ended = self._fail(job, token, exc, metrics)
                except Exception as exc:
                    log.exception("job %s failed unexpectedly", job_id, extra=self._fields(job_id))
                    ended = self._fail(
                        job, token, SmartsegError(f"internal error: {type(exc).__name__}"), metrics
                    )
        finally:
            with self._held_lock:
                self._held.pop(job_id, None)
        if ended is None or ended.value != "succeeded":
            self._discard(job_id, uploaded)
        outcome = ended.value if ended else "lost"
        total_s = round(queue_s + time.perf_counter() - claimed, 4)
        if ended is not None:  # a run that lost its lease did not finish: another one will
            self._observe(job, metrics, total_s)
        log.info(
            "job %s %s in %.3fs",
            job_id,
            outcome,
            total_s,
            extra=self._fields(job_id, stage="total", duration_s=total_s),
        )
        return outcome

    def _fields(self, job_id: str, **more: object) -> dict[str, object]:
        """A job's log fields (``extra=``): a log search follows the job by them."""
        return {"job_id": job_id, "region": self.region, "worker": self.worker_id, **more}

    def _stage_done(self, job: JobRecord, stage: str, started: float) -> float:
        """Seconds since ``started``, logged as the duration of ``stage``."""
        seconds = _since(started)
        log.info(
            "job %s %s done in %.3fs",
            job.id,
            stage,
            seconds,
            extra=self._fields(job.id, stage=stage, duration_s=seconds),
        )
        return seconds

    def _observe(self, job: JobRecord, metrics: dict[str, float], total_s: float) -> None:
        """A finished run's stage times, into smartseg_job_stage_seconds: the stages it reached."""
        pipeline = job.spec.pipeline
        for key, stage in STAGE_METRICS.items():
            if key in metrics:
                JOB_STAGE_SECONDS.labels(stage, self.region, pipeline).observe(metrics[key])
        JOB_STAGE_SECONDS.labels("total", self.region, pipeline).observe(total_s)

    def _stages(
        self, job: JobRecord, pipeline: Pipeline, lease: Lease, metrics: dict[str, float], uploaded: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        spec = job.spec
        # Stage boundaries that precede real work check for a cancel; the final write catches late ones.
        started = time.perf_counter()
        # A download that waits on the network checks for a cancel every second, not only when it ends.
        fetched = self.fetcher.fetch(spec.image_url, lease.checkpoint)
        metrics["fetch_s"] = self._stage_done(job, "fetch", started)

        started = time.perf_counter()
        image = decode_image(fetched.data, self.max_image_pixels, self.decode_max_side)
        metrics["decode_s"] = self._stage_done(job, "decode", started)
        lease.checkpoint()

        # Canceled or taken over while it waited for its turn: the model never runs it.
        turn = self.model.run(pipeline, ImageJob(image.pixels, spec.prompts, spec.options), lease.checkpoint)
        results = turn.run.results
        metrics["model_wait_s"] = turn.waited_s
        metrics["inference_s"] = turn.batch_s
        metrics["batch_size"] = turn.batch_size
        metrics.update(turn.run.counters)
        log.info(
            "job %s inference done in %.3fs (batch of %d, waited %.3fs)",
            job.id,
            turn.batch_s,
            turn.batch_size,
            turn.waited_s,
            extra=self._fields(job.id, stage="inference", duration_s=turn.batch_s),
        )
        lease.checkpoint()

        started = time.perf_counter()
        outputs = self._upload(job, results, image, fetched.data, spec.options.output_format, uploaded)
        metrics["upload_s"] = self._stage_done(job, "upload", started)
        prompt_results = [
            {
                "prompt": result.prompt,
                "result": "match" if result.segments else "no_match",
                "masks": len(result.segments),
            }
            for result in results
        ]
        return outputs, prompt_results

    def _upload(
        self,
        job: JobRecord,
        results: list[PromptResult],
        image: DecodedImage,
        data: bytes,
        output_format: str,
        uploaded: list[str],
    ) -> list[dict[str, Any]]:
        width, height = image.width, image.height
        # A cutout carries the image's own pixels, at full size: decoded again only for it, only if scaled.
        source = None
        if output_format == "cutout":
            source = decode_image(data, self.max_image_pixels).pixels if image.scaled else image.pixels
        outputs: list[dict[str, Any]] = []
        for result in results:
            for segment in result.segments:
                mask = image.full_size(segment.mask)
                encoded = encode_mask(mask, output_format, source)
                filename = f"{job.filename_stem}.mask-{len(outputs)}{encoded.suffix}"
                key = object_key(job.id, job.attempt, filename)
                self.storage.put(key, encoded.data, encoded.content_type)
                uploaded.append(key)
                outputs.append(
                    {
                        "key": key,
                        "filename": filename,
                        "content_type": encoded.content_type,
                        "width": width,
                        "height": height,
                        "prompt": segment.prompt,
                        "label": segment.label,
                        "score": round(float(segment.score), 4),
                        "box": list(mask_box(mask)),
                        "area": int(np.count_nonzero(mask)),
                        "model": segment.model,
                    }
                )
        return outputs

    def _fail(self, job: JobRecord, token: str, error: SmartsegError, metrics: dict[str, float]) -> Any:
        log.info("job %s failed: %s %s", job.id, error.code, error.message, extra=self._fields(job.id))
        return self.store.fail(job, token, error=error.to_dict(), metrics=metrics)

    def _discard(self, job_id: str, keys: list[str]) -> None:
        """Outputs of a canceled, failed or taken-over run are removed, best effort."""
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception as exc:
                log.warning("could not delete discarded output %s: %s", key, exc, extra=self._fields(job_id))


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)
