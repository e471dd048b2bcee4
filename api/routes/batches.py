"""``/v1/batches``: many jobs in one request, expanded by the service a moving window at a time
(``worker/batch_expander.py``); progress, results in manifest order, cancel."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from smartseg.api.deps import Owner, ServicesDep, SubmitCaller, take_token
from smartseg.api.job_view import batch_view, job_view
from smartseg.api.responses import error_responses, json_response, success
from smartseg.api.routes.segmentations import IdempotencyKey, base_url
from smartseg.api.services import Services
from smartseg.shared.batches import BatchRecord
from smartseg.shared.errors import JobAlreadyFinished, NotFound, SmartsegError, UnknownRegion
from smartseg.shared.job_requests import check_manifest, check_webhook, item_request, job_spec
from smartseg.shared.keys import BATCH
from smartseg.shared.schemas import Batch, BatchRequest

router = APIRouter(prefix="/v1/batches", tags=["batches"])
RESULTS_PAGE = 500  # items read from Redis at a time while results stream


@router.post(
    "",
    status_code=202,
    response_model=Batch,
    summary="Submit a batch: items inline (up to 1,000) or a JSONL manifest URL",
    responses={
        202: success({}, "Accepted: the batch, expanded by the service from now on."),
        **error_responses(401, 409, 413, 422, 429, 503),
    },
)
async def create_batch(
    body: BatchRequest,
    caller: SubmitCaller,
    services: ServicesDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    await take_token(services, request, caller, BATCH)
    defaults = body.defaults
    if defaults.region is not None and defaults.region not in services.settings.regions:
        raise UnknownRegion(f"unknown region {defaults.region!r}", {"regions": services.settings.regions})
    stored_defaults = {
        "options": defaults.options.model_dump(exclude_unset=True),
        "region": defaults.region,
        "region_policy": defaults.region_policy,
    }
    items = None
    if body.items is not None:  # checked now, as submits are: the client learns of a bad item at once
        for index, item in enumerate(body.items):
            try:
                job_spec(item_request(item, stored_defaults), services.settings, services.fetch_limits)
            except SmartsegError as exc:  # which item, so a client can drop it and send the rest
                exc.message = f"item {index}: {exc.message}"
                exc.details = {**exc.details, "item": index}
                raise
        items = [item.model_dump_json(exclude_unset=True) for item in body.items]
    else:
        check_manifest(str(body.manifest_url), services.fetch_limits, services.settings.manifest_s3_prefixes)
    webhook_url = body.webhook_url
    if webhook_url is None:
        default = await services.default_webhook(caller.owner)
        webhook_url = default.url if default and "completed" in default.events else None
    if webhook_url is not None:
        check_webhook(webhook_url, services.fetch_limits)
    idem = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else None
    batch, created = await run_in_threadpool(
        services.batches.create,
        caller.owner,
        body.manifest_url or "inline",
        stored_defaults,
        items,
        idem,
        webhook_url,
        hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
    )
    headers = {"Location": f"/v1/batches/{batch.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(batch_view(batch), status_code=202, headers=headers)


@router.get(
    "/{batch_id}",
    response_model=Batch,
    summary="A batch's status, counts, progress and bill",
    responses={200: success(), **error_responses(401, 404, 422, 429, 503)},
)
async def read_batch(batch_id: str, owner: Owner, services: ServicesDep) -> Response:
    batch = await run_in_threadpool(services.batches.get_for_owner, owner, batch_id)
    return json_response(batch_view(batch))


@router.get(
    "/{batch_id}/results",
    summary="One JSON line per item, in manifest order: its key, job, status, outputs or error",
    responses={
        200: {**success(), "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
        **error_responses(401, 404, 422, 429, 503),
    },
)
async def batch_results(batch_id: str, owner: Owner, services: ServicesDep, request: Request) -> Response:
    batch = await run_in_threadpool(services.batches.get_for_owner, owner, batch_id)
    lines = _result_lines(services, batch, base_url(request, services))
    return StreamingResponse(iterate_in_threadpool(lines), media_type="application/x-ndjson")


def _result_lines(services: Services, batch: BatchRecord, root: str) -> Iterator[str]:
    """Read a page of items at a time, never the whole batch."""
    submitted = batch.counts["submitted"]
    for start in range(0, submitted, RESULTS_PAGE):
        entries = services.batches.results(batch.id, start, min(RESULTS_PAGE, submitted - start))
        ids = [entry["job_id"] for entry in entries if entry and entry["job_id"]]
        jobs = dict(zip(ids, services.store.get_many(ids), strict=True))
        for offset, entry in enumerate(entries):
            line: dict[str, object] = {"index": start + offset, "key": None, "job_id": None}
            if entry is not None:
                line |= {"key": entry.get("key"), "job_id": entry["job_id"]}
                job = jobs.get(entry["job_id"]) if entry["job_id"] else None
                if job is not None:
                    shown = job_view(job, services.storage, services.settings.presign_ttl_s, root)
                    line |= {
                        "status": shown.status,
                        "result": shown.result,
                        "outputs": [output.model_dump(mode="json") for output in shown.outputs],
                        "error": shown.error.model_dump() if shown.error else None,
                    }
                else:
                    line |= {"status": "invalid" if entry["error"] else "expired", "error": entry["error"]}
            yield json.dumps(line, separators=(",", ":")) + "\n"


@router.post(
    "/{batch_id}/cancel",
    response_model=Batch,
    summary="Cancel a batch: no more items, its queued jobs canceled, running ones asked to stop",
    responses={200: success(), **error_responses(401, 404, 413, 422, 429, 503)},
)
async def cancel_batch(batch_id: str, owner: Owner, services: ServicesDep) -> Response:
    batch = await run_in_threadpool(services.batches.get_for_owner, owner, batch_id)

    def cancel() -> BatchRecord:
        if services.batches.cancel(batch.id):
            for job_id in services.batches.job_ids(batch.id):
                with contextlib.suppress(JobAlreadyFinished, NotFound):  # it ended, or expired
                    services.store.cancel(owner, job_id)
        return services.batches.get(batch.id)

    return json_response(batch_view(await run_in_threadpool(cancel)))
