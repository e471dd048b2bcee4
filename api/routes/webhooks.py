"""``/v1/webhooks``: the calling key's default endpoint and its signing secret (per owner: a rotated key
keeps both)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from smartseg.api.deps import Owner, ServicesDep
from smartseg.api.responses import error_responses, json_response, success
from smartseg.shared.errors import NotFound
from smartseg.shared.job_requests import check_webhook
from smartseg.shared.jobspec import WebhookTarget
from smartseg.shared.schemas import SecretRotation, WebhookEndpoint, WebhookSecret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.get(
    "/default",
    response_model=WebhookEndpoint,
    summary="Your default webhook endpoint",
    responses={200: success(), **error_responses(401, 404, 429, 503)},
)
async def read_default(owner: Owner, services: ServicesDep) -> Response:
    target = await run_in_threadpool(services.webhooks.default_target, owner)
    if target is None:
        raise NotFound("no default webhook endpoint is set")
    return json_response(WebhookEndpoint(url=target.url, events=list(target.events)))


@router.put(
    "/default",
    response_model=WebhookEndpoint,
    summary="Set your default webhook endpoint: jobs without a webhook_url report there",
    responses={200: success(), **error_responses(401, 413, 422, 429, 503)},
)
async def set_default(body: WebhookEndpoint, owner: Owner, services: ServicesDep) -> Response:
    check_webhook(body.url, services.fetch_limits)
    target = WebhookTarget(url=body.url, events=tuple(dict.fromkeys(body.events)))
    await run_in_threadpool(services.webhooks.set_default, owner, target)
    return json_response(WebhookEndpoint(url=target.url, events=list(target.events)))


@router.delete(
    "/default",
    status_code=204,
    summary="Remove your default webhook endpoint",
    responses={204: success(), **error_responses(401, 429, 503)},
)
async def clear_default(owner: Owner, services: ServicesDep) -> Response:
    await run_in_threadpool(services.webhooks.clear_default, owner)
    return Response(status_code=204)


@router.get(
    "/secret",
    response_model=WebhookSecret,
    summary="The secret that signs your deliveries (made on first use)",
    responses={200: success(), **error_responses(401, 429, 503)},
)
async def read_secret(owner: Owner, services: ServicesDep) -> Response:
    signing = await run_in_threadpool(services.webhooks.secrets, owner)
    return json_response(WebhookSecret(secret=signing[0]))


@router.post(
    "/secret/rotate",
    response_model=WebhookSecret,
    summary="A new signing secret; the old one keeps signing too for overlap_s",
    responses={200: success(), **error_responses(401, 413, 422, 429, 503)},
)
async def rotate_secret(body: SecretRotation, owner: Owner, services: ServicesDep) -> Response:
    secret, until = await run_in_threadpool(services.webhooks.rotate_secret, owner, body.overlap_s)
    shown_until = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json_response(WebhookSecret(secret=secret, previous_valid_until=shown_until))
