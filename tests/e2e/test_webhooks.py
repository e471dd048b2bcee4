"""Webhooks through the whole stack: the deliverer process sends a job's events to a loopback receiver
that fails, then hangs past the timeout, then accepts; every delivery verifies with the reference
``standardwebhooks`` package and the key's secret from the API; the attempts are listed; redeliver sends
the same event again; a key's default endpoint is used by jobs that name none."""

from __future__ import annotations

import time

from standardwebhooks.webhooks import Webhook

from smartseg.testing.scenes import demo_scene
from smartseg.testing.webhook_receiver import HANG, WebhookReceiver, serve_webhooks
from tests.e2e.chaos import api_client, until
from tests.e2e.conftest import ImageServer, RunningStack


def verified(receiver: WebhookReceiver, secret: str) -> list[dict[str, object]]:
    """Every body the receiver got, each checked against its signature by the reference package."""
    return [Webhook(secret).verify(got.body, got.headers) for got in receiver.received]


def test_a_job_event_is_retried_through_failures_and_verifies(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("webhook-scene.png", demo_scene().image)
    api = api_client(running_stack)
    secret = api.get("/v1/webhooks/secret").json()["secret"]
    with serve_webhooks([500, HANG, 204]) as receiver:
        created = api.post(
            "/v1/segmentations",
            json={"image_url": image_url, "prompt": "red circle", "webhook_url": receiver.url},
        ).json()
        assert created["input"]["webhook_url"] == receiver.url and created["input"]["webhook_events"] == [
            "completed"
        ]
        job_id = created["id"]
        deliveries = f"/v1/segmentations/{job_id}/deliveries"
        until(
            lambda: (
                api.get(deliveries).json()["data"][:1] != []
                and api.get(deliveries).json()["data"][0]["status"] == "delivered"
            )
        )
        (delivery,) = api.get(deliveries).json()["data"]
        assert delivery["id"] == f"{job_id}.completed" and delivery["event"] == "completed"
        assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, None, 204]
        assert delivery["attempts"][1]["error"] == "timed out"
        assert {got.headers["webhook-id"] for got in receiver.received} == {delivery["id"]}
        payloads = verified(receiver, secret)
        assert all(payload["type"] == "segmentation.completed" for payload in payloads)
        job = payloads[-1]["data"]
        assert job["id"] == job_id and job["status"] == "succeeded"  # type: ignore[index]
        assert job["outputs"][0]["url"].startswith("http")  # type: ignore[index]  # presigned, as GET gives

        redelivered = api.post(f"{deliveries}/{delivery['id']}/redeliver")
        assert redelivered.status_code == 202
        until(lambda: len(receiver.received) == 4)
        assert receiver.received[-1].headers["webhook-id"] == delivery["id"]
        verified(receiver, secret)
    assert api.post(f"{deliveries}/nope/redeliver").status_code == 404


def test_the_default_endpoint_gets_started_and_completed(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("webhook-default.png", demo_scene().image)
    api = api_client(running_stack, running_stack.other_api_key)
    with serve_webhooks() as receiver:
        put = api.put("/v1/webhooks/default", json={"url": receiver.url, "events": ["started", "completed"]})
        assert put.status_code == 200, put.text
        old_secret = api.get("/v1/webhooks/secret").json()["secret"]
        rotated = api.post("/v1/webhooks/secret/rotate", json={"overlap_s": 600}).json()
        job_id = api.post("/v1/segmentations", json={"image_url": image_url, "prompt": "red circle"}).json()[
            "id"
        ]
        until(lambda: len(receiver.received) == 2)
        types = sorted(
            str(payload["type"]) for payload in verified(receiver, old_secret)
        )  # the old one still signs
        assert types == ["segmentation.completed", "segmentation.started"]
        verified(receiver, rotated["secret"])
        assert {got.headers["webhook-id"] for got in receiver.received} == {
            f"{job_id}.started.1",
            f"{job_id}.completed",
        }
        assert api.delete("/v1/webhooks/default").status_code == 204
    assert api.get("/v1/webhooks/default").status_code == 404


def test_webhook_urls_go_through_the_address_guard(running_stack: RunningStack) -> None:
    api = api_client(running_stack)
    for url in ("http://169.254.169.254/latest", "http://10.0.0.1/hooks", "HTTP://[::1]:8080/x"):
        refused = api.post(
            "/v1/segmentations",
            json={
                "image_url": "https://images.example.com/x.png",
                "prompt": "red circle",
                "webhook_url": url,
            },
        )
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "webhook_url_forbidden", url


def test_a_batch_says_when_it_completed(running_stack: RunningStack, image_server: ImageServer) -> None:
    image_url = image_server.add_png("webhook-batch.png", demo_scene().image)
    api = api_client(running_stack)
    secret = api.get("/v1/webhooks/secret").json()["secret"]
    with serve_webhooks() as receiver:
        items = [{"image_url": image_url, "prompt": "red circle"} for _ in range(5)]
        created = api.post("/v1/batches", json={"items": items, "webhook_url": receiver.url}).json()
        assert created["webhook_url"] == receiver.url
        until(lambda: len(receiver.received) >= 1)
        time.sleep(0.5)  # nothing else comes: the items' jobs send no webhooks of their own
        (payload,) = verified(receiver, secret)
    assert payload["type"] == "batch.completed"
    assert payload["data"]["id"] == created["id"] and payload["data"]["status"] == "completed"  # type: ignore[index]
    assert receiver.received[0].headers["webhook-id"] == f"{created['id']}.completed"
