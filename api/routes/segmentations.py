"""``/v1/segmentations``: submit, read (optionally waiting), list and cancel jobs, and read their outputs."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from smartseg.api.deps import Owner, ServicesDep, SubmitCaller, take_token
from smartseg.api.job_view import delivery_view, job_view
from smartseg.api.responses import error_responses, header, json_response, success
from smartseg.api.services import Services
from smartseg.shared.errors import NotFound
from smartseg.shared.fetch import image_filename_stem
from smartseg.shared.job_requests import job_spec
from smartseg.shared.jobstore import DEFAULT_PAGE_SIZE, JobRecord, JobStatus
from smartseg.shared.schemas import DeliveryList, DeliveryView, Job, JobList, SegmentationRequest

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/segmentations", tags=["segmentations"])

MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_PAGE_SIZE = 100
_WAIT_PREFERENCE = re.compile(r"(?:^|[,;\s])wait\s*=\s*([0-9]+)", re.IGNORECASE)
# More digits than this is more seconds than any cap: read as "as long as allowed" without parsing it.
MAX_WAIT_DIGITS = 6
# For submits of jobs and of batches alike.
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        pattern=r"\S",  # HTTP strips spaces around a header value: a blank one arrives empty
        description=(
            "A retry with the same key and body returns what the first one made (for "
            "`SMARTSEG_JOB_TTL_S`, as long as the job); another body under the key is a 409."
        ),
    ),
]
PreferHeader = Annotated[str | None, Header(description="`wait=N` holds the response until done or N s pass")]


def requested_wait(prefer: str | None, max_wait_s: int) -> int:
    """Seconds asked for by ``Prefer: wait=N``, capped; unknown preferences are ignored (RFC 7240)."""
    match = _WAIT_PREFERENCE.search(prefer or "")
    if match is None:
        return 0
    digits = match.group(1)
    return max_wait_s if len(digits) > MAX_WAIT_DIGITS else min(int(digits), max_wait_s)


def base_url(request: Request, services: Services) -> str:
    return (services.settings.public_base_url or str(request.base_url)).rstrip("/")


async def render(
    services: Services,
    request: Request,
    job: JobRecord,
    wait_s: int = 0,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The job as the client sees it, after waiting up to ``wait_s`` for it to finish."""
    root = base_url(request, services)
    ttl_s = services.settings.presign_ttl_s
    headers = dict(headers or {})
    if wait_s and not job.status.is_terminal():
        await services.waiter.wait(job.id, wait_s)
        headers["Preference-Applied"] = f"wait={wait_s}"
        job = await services.reader.get_for_owner(job.owner, job.id)
    # Presigning is local CPU work (no I/O), so it runs right here rather than in a thread.
    return json_response(job_view(job, services.storage, ttl_s, root), status_code, headers)


WAIT_APPLIED = header("`wait=N`: the response was held up to N s (`Prefer: wait=N`, capped).")


@router.post(
    "",
    status_code=202,
    response_model=Job,
    summary="Submit a segmentation job",
    responses={
        202: success(
            {
                "Location": header("The job's URL."),
                "Idempotent-Replayed": header("`true` when an Idempotency-Key returned an earlier job."),
                "Preference-Applied": WAIT_APPLIED,
            },
            "Accepted: the job as it stands (finished, if it ended within `Prefer: wait`).",
        ),
        **error_responses(401, 409, 413, 422, 429, 503),
    },
)
async def create_segmentation(
    body: SegmentationRequest,
    caller: SubmitCaller,
    services: ServicesDep,
    request: Request,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    # Everything that can refuse the request runs before the job exists: once created, it is answered.
    default_webhook = None if body.webhook_url else await services.default_webhook(caller.owner)
    spec = job_spec(body, services.settings, services.fetch_limits, default_webhook)
    await take_token(services, request, caller, spec.priority)  # batch submits have a budget of their own
    wait_s = requested_wait(prefer, services.settings.max_wait_s)
    requested = spec.region or services.settings.default_region
    region = await services.placement.place(spec.pipeline, requested, spec.pinned)
    idem_hash = request_hash = None
    if idempotency_key is not None:
        idem_hash = hashlib.sha256(idempotency_key.encode()).hexdigest()
        request_hash = spec.fingerprint()

    def submit() -> tuple[JobRecord, bool]:
        job, created = services.store.create(
            owner=caller.owner,
            spec=spec,
            region=region,
            filename_stem=image_filename_stem(spec.image_url),
            idempotency_key_hash=idem_hash,
            request_hash=request_hash,
            max_active_jobs=caller.limits.max_active_jobs,
        )
        if created:
            _send(services, job)
        return job, created

    job, created = await run_in_threadpool(submit)
    if created:
        log.info(
            "job %s created by key %s",
            job.id,
            request.state.key_id,
            extra={"job_id": job.id, "region": job.region, "key_id": request.state.key_id},
        )
    headers = {"Location": f"/v1/segmentations/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return await render(services, request, job, wait_s, status_code=202, headers=headers)


def _send(services: Services, job: JobRecord) -> None:
    """The new job's first message. If the send fails the job stays owed: the router sends it once it is
    due (the job is recorded, so the client still gets its 202)."""
    try:
        services.outbox.send(job)
    except Exception as exc:
        log.warning(
            "job %s: message not sent (%s); the router will send it", job.id, exc, extra={"job_id": job.id}
        )


@router.get(
    "/{job_id}",
    response_model=Job,
    summary="Read a job (optionally waiting for it to finish)",
    responses={
        200: success({"Preference-Applied": WAIT_APPLIED}),
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def get_segmentation(
    job_id: str,
    owner: Owner,
    services: ServicesDep,
    request: Request,
    prefer: PreferHeader = None,
) -> Response:
    job = await services.reader.get_for_owner(owner, job_id)
    return await render(services, request, job, requested_wait(prefer, services.settings.max_wait_s))


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    responses={200: success(), **error_responses(401, 404, 409, 413, 422, 429, 503)},
)
async def cancel_segmentation(job_id: str, owner: Owner, services: ServicesDep, request: Request) -> Response:
    def cancel() -> JobRecord:
        services.store.cancel(owner, job_id)
        return services.store.get_for_owner(owner, job_id)

    return await render(services, request, await run_in_threadpool(cancel))


@router.get(
    "",
    response_model=JobList,
    summary="List your jobs, newest first",
    responses={200: success(), **error_responses(401, 422, 429, 503)},
)
async def list_segmentations(
    owner: Owner,
    services: ServicesDep,
    request: Request,
    status: JobStatus | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    batch_id: Annotated[
        str | None, Query(pattern=r"^bat_[0-9a-f]{24}$", description="Only this batch's jobs.")
    ] = None,
) -> Response:
    root = base_url(request, services)
    ttl_s = services.settings.presign_ttl_s

    def page() -> JobList:
        found = services.store.list_for_owner(
            owner, status=status, cursor=cursor, limit=limit, batch_id=batch_id
        )
        jobs = [job_view(job, services.storage, ttl_s, root) for job in found.jobs]
        return JobList(data=jobs, next_cursor=found.next_cursor)

    return json_response(await run_in_threadpool(page))


OUTPUT_CONTENT = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},  # png and cutout outputs
    "application/json": {"schema": {"type": "object"}},  # rle and polygon outputs
}


@router.get(
    "/{job_id}/outputs/{index}",
    response_class=Response,
    summary="Download one output's file through the API",
    description=(
        "The stored file of `outputs[index]`, with the output's `content_type`: for clients that cannot "
        "use the presigned URL (a browser page on this origin: the storage host sends no CORS headers)."
    ),
    responses={
        200: {
            **success({"Content-Disposition": header("`inline; filename=<outputs[index].filename>`")}),
            "description": "The output's file.",
            "content": OUTPUT_CONTENT,
        },
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def get_output(
    job_id: str,
    index: Annotated[int, Path(ge=0, description="Position in the job's `outputs[]`.")],
    owner: Owner,
    services: ServicesDep,
) -> Response:
    job = await services.reader.get_for_owner(owner, job_id)
    if index >= len(job.outputs):
        raise NotFound(
            f"segmentation {job_id!r} has no output {index}",
            {"outputs": len(job.outputs), "status": job.status.value},
        )
    output = job.outputs[index]
    stored = await run_in_threadpool(services.storage.open, output["key"])
    if stored is None:  # removed from the bucket (a lifecycle rule, by hand) while the job is still kept
        raise NotFound(f"the file of output {index} of segmentation {job_id!r} is gone")
    headers = {
        "Content-Length": str(stored.length),
        "Content-Disposition": f'inline; filename="{output["filename"]}"',
        # Keyed by URL alone, a browser cache could hand one key's mask to another key's request.
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(stored.chunks(), media_type=output["content_type"], headers=headers)


@router.get(
    "/{job_id}/deliveries",
    response_model=DeliveryList,
    summary="The job's webhook deliveries, with every attempt",
    responses={200: success(), **error_responses(401, 404, 422, 429, 503)},
)
async def list_deliveries(job_id: str, owner: Owner, services: ServicesDep) -> Response:
    await services.reader.get_for_owner(owner, job_id)  # another owner's job is no job at all
    deliveries = await run_in_threadpool(services.webhooks.of_job, job_id)
    return json_response(DeliveryList(data=[delivery_view(delivery) for delivery in deliveries]))


@router.post(
    "/{job_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryView,
    summary="Send a delivery again now (same webhook-id), with a fresh retry schedule",
    responses={202: success(), **error_responses(401, 404, 413, 422, 429, 503)},
)
async def redeliver(job_id: str, delivery_id: str, owner: Owner, services: ServicesDep) -> Response:
    await services.reader.get_for_owner(owner, job_id)
    delivery = await run_in_threadpool(services.webhooks.redeliver, job_id, delivery_id)
    return json_response(delivery_view(delivery), status_code=202)
