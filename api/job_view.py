"""Turns a stored job record into the API's ``Job``, with presigned output URLs made at read time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from smartseg.shared.batches import BatchRecord
from smartseg.shared.billing import usd
from smartseg.shared.fetch import is_data_url
from smartseg.shared.jobstore import JobRecord, JobStatus
from smartseg.shared.schemas import (
    Batch,
    BatchCounts,
    Billing,
    BillingReason,
    DeliveryAttempt,
    DeliveryView,
    Job,
    JobError,
    JobInput,
    JobMetrics,
    JobUrls,
    MaskOutput,
    PromptResult,
    RegionEvent,
    SegmentationOptions,
)
from smartseg.shared.storage import MaskStorage
from smartseg.shared.webhooks import Delivery

DATA_URL_PREVIEW_CHARS = 64


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown_image_url(url: str) -> str:
    """data: URLs (the scheme in any case) can be megabytes; echo only their head and size."""
    if is_data_url(url) and len(url) > DATA_URL_PREVIEW_CHARS:
        return f"{url[:DATA_URL_PREVIEW_CHARS]}...({len(url)} chars)"
    return url


def job_view(job: JobRecord, storage: MaskStorage, presign_ttl_s: int, base_url: str) -> Job:
    spec = job.spec
    outputs = [
        MaskOutput(url=storage.presigned_url(item["key"], presign_ttl_s), **_without_key(item))
        for item in job.outputs
    ]
    result: Literal["match", "no_match"] | None = None
    if job.status == "succeeded":
        result = "match" if outputs else "no_match"
    path = f"{base_url}/v1/segmentations/{job.id}"
    return Job(
        id=job.id,
        status=job.status.value,
        input=JobInput(
            image_url=shown_image_url(spec.image_url),
            prompts=list(spec.prompts),
            priority=spec.priority,
            region=spec.region,
            region_policy=spec.region_policy,
            options=SegmentationOptions(**spec.options.model_dump(), pipeline=spec.pipeline),
            webhook_url=spec.webhook.url if spec.webhook else None,
            webhook_events=list(spec.webhook.events) if spec.webhook else None,
        ),
        region=job.region,
        attempts=job.attempt,
        history=[RegionEvent(**{**item, "at": iso_time(item["at"]) or ""}) for item in job.history],
        cancel_requested=job.cancel_requested,
        result=result,
        outputs=outputs,
        prompt_results=[PromptResult(**item) for item in job.prompt_results],
        error=JobError(**job.error) if job.error else None,
        metrics=JobMetrics.model_validate(job.metrics),
        billing=billing(job),
        created_at=iso_time(job.created_at) or "",
        started_at=iso_time(job.started_at),
        finished_at=iso_time(job.finished_at),
        urls=JobUrls(get=path, cancel=f"{path}/cancel"),
    )


def _without_key(item: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in item.items() if name != "key"}


def billing(job: JobRecord) -> Billing:
    reason: BillingReason = "pending"
    if job.status is JobStatus.SUCCEEDED:
        reason = "succeeded" if job.billed_micro_usd else "no_match"
    elif job.status is JobStatus.FAILED:
        reason = "failed"
    elif job.status is JobStatus.CANCELED:
        reason = "canceled"
    return Billing(billed=job.billed_micro_usd > 0, amount_usd=usd(job.billed_micro_usd), reason=reason)


def delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        event=delivery.event,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=[
            DeliveryAttempt(**{**attempt, "at": iso_time(attempt["at"]) or ""})
            for attempt in delivery.attempts
        ],
        next_attempt_at=iso_time(delivery.next_attempt_at),
        created_at=iso_time(delivery.created_at) or "",
    )


def batch_view(batch: BatchRecord) -> Batch:
    counts = batch.counts
    path = f"/v1/batches/{batch.id}"
    return Batch(
        id=batch.id,
        status=batch.status,  # type: ignore[arg-type]
        source=batch.source,
        total=batch.total,
        submitted=counts["submitted"],
        counts=BatchCounts(
            queued_or_running=batch.in_flight,
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            canceled=counts["canceled"],
            invalid=counts["invalid"],
            reused=counts["reused"],
        ),
        progress=round(batch.done / batch.total, 4) if batch.total else 0.0,
        amount_usd=usd(counts["micro_usd"]),
        created_at=iso_time(batch.created_at) or "",
        completed_at=iso_time(batch.completed_at),
        error=JobError(**batch.error) if batch.error else None,
        webhook_url=batch.webhook_url,
        urls={
            "get": path,
            "results": f"{path}/results",
            "cancel": f"{path}/cancel",
            "jobs": f"/v1/segmentations?batch_id={batch.id}",
        },
    )
