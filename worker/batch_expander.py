"""Batches become jobs in a moving window, in the router (one active copy): each tick, every batch still
being expanded gets as many new jobs as it has room for (``SMARTSEG_BATCH_WINDOW`` jobs of it queued or
running at once), so batches progress side by side, a batch never floods Redis, and interactive jobs
submitted later are queued before the batch's remaining items.

Items come from the batch's inline list or its manifest, read as a stream and kept open across ticks.
Each item is checked as a submit is (``job_requests.job_spec``); one that fails is recorded as refused,
with its error, and the batch goes on. Its job is created under an idempotency key of the batch and the
item's index (or the item's own key), and the item recorded once: an expansion resumed after a restart
skips what it did, and makes no job twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from smartseg.shared.batches import CANCELED, EXPANDING, BatchRecord, BatchStore, item_idempotency_hash
from smartseg.shared.errors import (
    ImageFetchFailed,
    ImageURLForbidden,
    JobAlreadyFinished,
    ManifestURLForbidden,
    NotFound,
    SmartsegError,
    TooManyJobs,
)
from smartseg.shared.fetch import FetchLimits, ImageFetcher, image_filename_stem, read_lines
from smartseg.shared.job_requests import check_manifest, item_request, job_spec, s3_location
from smartseg.shared.jobstore import JobStore
from smartseg.shared.outbox import Outbox
from smartseg.shared.schemas import BatchItem, item_error
from smartseg.shared.settings import Settings

log = logging.getLogger(__name__)

MANIFEST_READ_S = 6 * 3600  # a manifest's stream may stay open this long while its items are made


class BatchExpander:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        batches: BatchStore,
        outbox: Outbox,
        limits: FetchLimits,
        s3: Any = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.batches = batches
        self.outbox = outbox
        self.limits = limits
        self.fetcher = ImageFetcher(limits)  # reads manifests, under the image URL rules
        self.s3 = s3  # reads s3:// manifests under the allowed prefixes
        self._manifests: dict[str, tuple[int, Iterator[str]]] = {}  # open streams: next index, lines

    def tick(self) -> int:
        """Make the jobs every expanding batch has room for; returns how many items were read."""
        read = 0
        for batch_id in self.batches.expanding():
            try:
                read += self.expand(self.batches.get(batch_id))
            except TooManyJobs:
                continue  # the owner is at its cap of active jobs: there is room again when one ends
            except SmartsegError as exc:
                log.warning("batch %s: %s", batch_id, exc.message)
        return read

    def expand(self, batch: BatchRecord) -> int:
        if batch.status != EXPANDING:
            self.batches.expanded(batch.id, batch.counts["submitted"])
            return 0
        room = self.settings.batch_window - batch.in_flight
        if room <= 0:
            return 0
        start = batch.counts["submitted"]
        try:
            lines, exhausted = self._next(batch, start, room)
        except (ImageFetchFailed, ImageURLForbidden, ManifestURLForbidden) as exc:
            self._manifests.pop(batch.id, None)
            self.batches.fail(
                batch.id, {"code": exc.code, "message": exc.message.replace("image", "manifest")}
            )
            return 0
        made = [self._make(batch, start + offset, line) for offset, line in enumerate(lines)]
        if self.batches.get(batch.id).status == CANCELED:
            # Canceled while these were made: the cancel may have listed the batch's jobs before them.
            for job_id in filter(None, made):
                with contextlib.suppress(JobAlreadyFinished, NotFound):
                    self.store.cancel(batch.owner, job_id)
            return len(lines)
        if exhausted:
            self._manifests.pop(batch.id, None)
            status = self.batches.expanded(batch.id, start + len(lines))
            log.info("batch %s: all %d items in (%s)", batch.id, start + len(lines), status)
        return len(lines)

    def _next(self, batch: BatchRecord, start: int, room: int) -> tuple[list[str], bool]:
        """Up to ``room`` items from ``start`` on, and whether they are the last."""
        if batch.source == "inline":
            lines = self.batches.inline_items(batch.id, start, room)
            return lines, len(lines) < room
        index, stream = self._manifests.get(batch.id, (-1, iter(())))
        if index != start:  # first read, or resumed by another router: skip what is done
            stream = self._open(batch.source)
            for _ in range(start):
                if next(stream, None) is None:
                    return [], True
        lines = [line for _, line in zip(range(room), stream, strict=False)]
        self._manifests[batch.id] = (start + len(lines), stream)
        return lines, len(lines) < room

    def _open(self, url: str) -> Iterator[str]:
        """A manifest's non-blank lines, as a stream: over http(s), or from S3 with the service's client."""
        location = s3_location(url)
        if location is None:
            return read_lines(self.fetcher, url, self.settings.batch_manifest_max_bytes, MANIFEST_READ_S)
        check_manifest(
            url, self.limits, self.settings.manifest_s3_prefixes
        )  # the allowed prefixes may change
        return self._s3_lines(*location)

    def _s3_lines(self, bucket: str, key: str) -> Iterator[str]:
        try:
            found = self.s3.get_object(Bucket=bucket, Key=key)
        except Exception as exc:  # botocore's errors: missing object, no access, S3 down
            raise ImageFetchFailed(
                f"Could not read the manifest s3://{bucket}/{key}: {type(exc).__name__}."
            ) from exc
        if found["ContentLength"] > self.settings.batch_manifest_max_bytes:
            raise ImageFetchFailed(f"The manifest is over {self.settings.batch_manifest_max_bytes} bytes.")
        with contextlib.closing(found["Body"]) as body:
            for line in body.iter_lines():
                if line.strip():
                    yield line.decode("utf-8", "replace")

    def _make(self, batch: BatchRecord, index: int, line: str) -> str | None:
        """Item ``index`` made into a job (recorded in the batch); the new job's id, if one was made."""
        key = None
        try:
            item = BatchItem.model_validate_json(line)
            key = item.key
            spec = job_spec(item_request(item, batch.defaults), self.settings, self.limits)
            job, created = self.store.create(
                owner=batch.owner,
                spec=spec,
                region=spec.region or self.settings.default_region,
                filename_stem=image_filename_stem(spec.image_url),
                idempotency_key_hash=item_idempotency_hash(batch.id, index, item.key),
                request_hash=spec.fingerprint(),
                batch=(batch.id, index),
            )
        except ValidationError as exc:
            self.batches.record_item(batch.id, index, None, item_error(exc), reused=False, key=key)
            return None
        except TooManyJobs:
            raise
        except SmartsegError as exc:
            self.batches.record_item(batch.id, index, None, exc.to_dict(), reused=False, key=key)
            return None
        if created:
            self.outbox.send(job)  # if this process dies first, the job is owed and the router sends it
        self.batches.record_item(batch.id, index, job.id, None, reused=job.batch_id != batch.id, key=key)
        return job.id if created else None
