"""A checked request becomes a ``JobSpec``: the one place that resolves a segmentation request against the
deployment (regions, default pipeline, URL rules, the owner's default webhook). The API uses it for each
submit, the batch expander for each item."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smartseg.shared.errors import ImageURLForbidden, ManifestURLForbidden, UnknownRegion, WebhookURLForbidden
from smartseg.shared.fetch import FetchLimits, check_image_url, check_webhook_url
from smartseg.shared.jobspec import JobOptions, JobSpec, WebhookTarget
from smartseg.shared.keys import BATCH
from smartseg.shared.schemas import BatchItem, SegmentationRequest
from smartseg.shared.settings import Settings


def item_request(item: BatchItem, defaults: Mapping[str, Any]) -> SegmentationRequest:
    """A batch item as the submit it stands for: the batch's ``defaults`` (as stored: ``options``,
    ``region``, ``region_policy``) under the item's own options, at batch priority."""
    own = item.options.model_dump(exclude_unset=True) if item.options else {}
    prompt = {"prompt": item.prompt} if item.prompt is not None else {"prompts": item.prompts}
    return SegmentationRequest.model_validate(
        {
            "image_url": item.image_url,
            "options": {**defaults.get("options", {}), **own},
            "region": defaults.get("region"),
            "region_policy": defaults.get("region_policy", "prefer"),
            "priority": BATCH,
            **prompt,
        }
    )


def job_spec(
    body: SegmentationRequest,
    settings: Settings,
    limits: FetchLimits,
    default_webhook: WebhookTarget | None = None,
) -> JobSpec:
    """The job this request asks for, checked against the deployment and with its defaults resolved:
    ``default_webhook`` is the owner's endpoint, for a request that names none."""
    if body.region is not None and body.region not in settings.regions:
        raise UnknownRegion(f"unknown region {body.region!r}", {"regions": settings.regions})
    check_image_url(body.image_url, limits)
    return JobSpec(
        webhook=webhook_target(body, default_webhook, limits),
        image_url=body.image_url,
        prompts=tuple(body.prompt_list()),
        pipeline=body.options.pipeline or settings.default_pipeline,
        options=JobOptions(**body.options.model_dump(exclude={"pipeline"})),
        region=body.region,
        region_policy=body.region_policy,
        priority=body.priority,
    )


def webhook_target(
    body: SegmentationRequest, default: WebhookTarget | None, limits: FetchLimits
) -> WebhookTarget | None:
    """The request's endpoint, else the owner's default one; the request's events, else the endpoint's."""
    if body.webhook_url is None and default is None:
        return None
    url = body.webhook_url or (default.url if default else "")
    events = default.events if default and body.webhook_url is None else ("completed",)
    check_webhook(url, limits)
    return WebhookTarget(url=url, events=tuple(dict.fromkeys(body.webhook_events or events)))


def check_webhook(url: str, limits: FetchLimits) -> None:
    """The image URL rules, refused as ``webhook_url_forbidden``."""
    try:
        check_webhook_url(url, limits)
    except ImageURLForbidden as exc:
        raise WebhookURLForbidden(exc.message.replace("image", "webhook"), exc.details) from exc


S3_SCHEME = "s3://"


def s3_location(url: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://bucket/key`` URL (any case of the scheme); None for another URL."""
    if url[: len(S3_SCHEME)].lower() != S3_SCHEME:
        return None
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    return bucket, key


def check_manifest(url: str, limits: FetchLimits, s3_prefixes: list[str]) -> None:
    """http(s) under the image URL rules, or ``s3://`` under one of ``s3_prefixes`` ("bucket/prefix"):
    the service's own S3 credentials read it, so only where the operator allowed. Refused as
    ``manifest_url_forbidden``."""
    location = s3_location(url)
    if location is not None:
        bucket, key = location
        if not (bucket and key and any(f"{bucket}/{key}".startswith(prefix) for prefix in s3_prefixes)):
            raise ManifestURLForbidden(
                "The manifest is not under an S3 prefix this deployment reads manifests from.",
                {"allowed": s3_prefixes},
            )
        return
    try:
        check_webhook_url(url, limits)
    except ImageURLForbidden as exc:
        raise ManifestURLForbidden(
            exc.message.replace("webhook", "manifest").replace("image", "manifest"), exc.details
        ) from exc
