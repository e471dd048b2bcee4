"""Webhooks on fakeredis: each event is queued once, in the step that changes the job; the deliverer
signs (checked by the reference ``standardwebhooks`` package), retries on its schedule, stops on 410,
and signs with both secrets while a rotation overlaps."""

from __future__ import annotations

import json

import fakeredis
import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from smartseg.api.deliverer import Deliverer
from smartseg.shared.batches import BatchStore
from smartseg.shared.fetch import FetchLimits, GuardedPoster
from smartseg.shared.jobspec import JobSpec, WebhookTarget
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.keys import Keys
from smartseg.shared.settings import Settings
from smartseg.shared.webhooks import DELIVERED, FAILED, GONE, PENDING, WebhookStore

URL = "https://hooks.example.com/smartseg"
MATCHED = [{"prompt": "red circle", "result": "match", "masks": 1}]


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, Keys("t"), 3600, 120_000)


@pytest.fixture
def webhooks(client: fakeredis.FakeRedis) -> WebhookStore:
    return WebhookStore(client, Keys("t"))


def new_job(store: JobStore, events: tuple[str, ...] | None = ("completed",)) -> JobRecord:
    webhook = WebhookTarget(url=URL, events=events) if events else None  # type: ignore[arg-type]
    spec = JobSpec(
        image_url="https://images.example.com/x.png",
        prompts=("red circle",),
        pipeline="lite",
        webhook=webhook,
    )
    return store.create(owner="alice", spec=spec, region="us-east", filename_stem="x")[0]


def test_completed_is_queued_once_in_the_finishing_step(store: JobStore, webhooks: WebhookStore) -> None:
    job = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    assert webhooks.of_job(job.id) == []  # not subscribed to `started`
    store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})
    store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})  # its reply was lost
    (delivery,) = webhooks.of_job(job.id)
    assert (delivery.id, delivery.event, delivery.status) == (f"{job.id}.completed", "completed", PENDING)
    assert webhooks.take_due(10, 30) == [delivery.id]
    assert webhooks.take_due(10, 30) == []  # held while it is being sent


def test_started_is_queued_per_attempt_and_a_cancel_completes(
    store: JobStore, webhooks: WebhookStore
) -> None:
    job = new_job(store, ("started", "completed"))
    store.claim(job.id, job.token, "w1", 10)
    assert [d.id for d in webhooks.of_job(job.id)] == [f"{job.id}.started.1"]
    queued = new_job(store)
    store.cancel("alice", queued.id)
    assert [d.event for d in webhooks.of_job(queued.id)] == ["completed"]


def test_a_job_without_a_webhook_queues_nothing(store: JobStore, webhooks: WebhookStore) -> None:
    job = new_job(store, None)
    store.claim(job.id, job.token, "w1", 10)
    store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})
    assert webhooks.of_job(job.id) == [] and webhooks.take_due(10, 30) == []


class Receiver:
    """Answers each POST with the next status of ``statuses`` (an exception: no answer)."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.statuses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


class NoStorage:
    def presigned_url(self, key: str, ttl_s: int) -> str:
        return f"https://s3.example.com/{key}"


def deliverer(
    store: JobStore, webhooks: WebhookStore, receiver: Receiver, schedule: str = "0,0"
) -> Deliverer:
    settings = Settings(webhook_retry_schedule_s=schedule, fetch_allowed_networks=["0.0.0.0/0"])
    poster = GuardedPoster(
        FetchLimits(), transport=httpx.MockTransport(receiver), resolver=lambda host, port: ["93.184.216.34"]
    )
    batches = BatchStore(webhooks.client, Keys("t"), 3600)
    return Deliverer(settings, store, webhooks, NoStorage(), poster, batches)  # type: ignore[arg-type]


def finished_job(store: JobStore) -> JobRecord:
    job = new_job(store)
    store.claim(job.id, job.token, "w1", 10)
    store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={})
    return job


def deliver_all(sender: Deliverer, webhooks: WebhookStore, times: int) -> list[str]:
    outcomes = []
    for _ in range(times):
        for delivery_id in webhooks.take_due(10, 0):
            outcomes.append(sender.deliver(delivery_id))
    return outcomes


def test_failures_are_retried_with_one_webhook_id_and_every_signature_verifies(
    store: JobStore, webhooks: WebhookStore
) -> None:
    job = finished_job(store)
    receiver = Receiver(500, httpx.ConnectError("refused"), 204)
    sender = deliverer(store, webhooks, receiver)
    assert deliver_all(sender, webhooks, 3) == [PENDING, PENDING, DELIVERED]
    secret = webhooks.secrets("alice")[0]
    assert secret.startswith("whsec_")
    ids = {request.headers["webhook-id"] for request in receiver.requests}
    assert ids == {f"{job.id}.completed"}
    for request in receiver.requests:
        payload = Webhook(secret).verify(request.content, dict(request.headers))
        assert payload["type"] == "segmentation.completed"
        assert payload["data"]["id"] == job.id and payload["data"]["status"] == "succeeded"
    (delivery,) = webhooks.of_job(job.id)
    assert delivery.status == DELIVERED
    assert [a["status_code"] for a in delivery.attempts] == [500, None, 204]
    assert delivery.attempts[1]["error"] == "connection failed"


def test_the_schedule_runs_out_to_failed_and_redeliver_starts_it_again(
    store: JobStore, webhooks: WebhookStore
) -> None:
    job = finished_job(store)
    sender = deliverer(store, webhooks, Receiver(503, 503, 503, 200), schedule="0")
    assert deliver_all(sender, webhooks, 3) == [PENDING, FAILED]
    webhooks.redeliver(job.id, f"{job.id}.completed")
    assert deliver_all(sender, webhooks, 1) == [PENDING]
    assert deliver_all(sender, webhooks, 1) == [DELIVERED]


def test_410_gone_stops_this_and_later_deliveries_to_the_endpoint(
    store: JobStore, webhooks: WebhookStore
) -> None:
    first = finished_job(store)
    receiver = Receiver(410)
    sender = deliverer(store, webhooks, receiver)
    assert deliver_all(sender, webhooks, 2) == [GONE]
    finished_job(store)
    assert deliver_all(sender, webhooks, 1) == [GONE] and len(receiver.requests) == 1
    assert webhooks.of_job(first.id)[0].attempts[0]["status_code"] == 410


def test_during_a_rotation_both_secrets_sign(store: JobStore, webhooks: WebhookStore) -> None:
    old = webhooks.secrets("alice")[0]
    new, _ = webhooks.rotate_secret("alice", overlap_s=60)
    finished_job(store)
    receiver = Receiver(200)
    deliver_all(deliverer(store, webhooks, receiver), webhooks, 1)
    (request,) = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver that knows either accepts it
        Webhook(secret).verify(request.content, dict(request.headers))
    assert json.loads(request.content)["type"] == "segmentation.completed"
