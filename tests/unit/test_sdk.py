"""The Python SDK against a mock transport: bodies it sends, retries, masks decoded from every format,
errors, paging, webhook verification and where it finds the API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from standardwebhooks.webhooks import Webhook

import smartseg
from smartseg.shared.client import (
    AsyncClient,
    Client,
    ClientError,
    RetryPolicy,
    SegmentationFailed,
    SegmentationTimeout,
    SmartsegAPIError,
    WebhookVerificationError,
    connection,
    image_url,
    verify_webhook,
)
from smartseg.shared.mask_encoding import encode_mask

API = "http://api.test"
S3 = "http://s3.test/masks"
KEY = "sk-unit-test"
IMAGE = np.zeros((6, 8, 3), dtype=np.uint8)
MASK = np.zeros((6, 8), dtype=bool)
MASK[1:4, 2:7] = True
IMAGE[MASK] = (200, 30, 30)
SUFFIXES = {"png": ".png", "rle": ".rle.json", "polygon": ".polygon.json", "cutout": ".cutout.png"}


def job_body(
    status: str = "succeeded", output_format: str = "png", masks: int = 1, **changes: Any
) -> dict[str, Any]:
    outputs = [
        {
            "type": "mask",
            "url": f"{S3}/mask-{index}{SUFFIXES[output_format]}?X-Amz-Signature=abc",
            "filename": f"photo.mask-{index}{SUFFIXES[output_format]}",
            "content_type": "application/json" if output_format in ("rle", "polygon") else "image/png",
            "width": 8,
            "height": 6,
            "prompt": "red thing",
            "label": "red square",
            "score": 0.9,
            "box": [2, 1, 7, 4],
            "area": 15,
            "model": "lite",
        }
        for index in range(masks if status == "succeeded" else 0)
    ]
    body = {
        "id": "seg_1",
        "object": "segmentation",
        "status": status,
        "input": {
            "image_url": "data:...",
            "prompts": ["red thing"],
            "priority": "interactive",
            "region": None,
            "options": {"output_format": output_format, "pipeline": "lite"},
        },
        "region": "us-east",
        "attempts": 1,
        "history": [],
        "cancel_requested": False,
        "result": ("match" if outputs else "no_match") if status == "succeeded" else None,
        "outputs": outputs,
        "prompt_results": [
            {"prompt": "red thing", "result": "match" if outputs else "no_match", "masks": masks}
        ],
        "error": {"code": "image_invalid", "message": "not an image"} if status == "failed" else None,
        "metrics": {"total_s": 0.1},
        "billing": {"billed": bool(outputs), "amount_usd": "0.12", "reason": "succeeded"},
        "created_at": "2026-11-30T08:00:00Z",
        "started_at": None,
        "finished_at": None,
        "urls": {"get": f"{API}/v1/segmentations/seg_1", "cancel": f"{API}/v1/segmentations/seg_1/cancel"},
    }
    return body | changes


class Recorder:
    """A mock server: answers from ``handle``, serves mask files, records every request."""

    def __init__(self, handle: Callable[[httpx.Request], httpx.Response], output_format: str = "png") -> None:
        self.handle = handle
        self.requests: list[httpx.Request] = []
        self.file = encode_mask(MASK, output_format, IMAGE).data

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if str(request.url).startswith(S3):
            return httpx.Response(200, content=self.file)
        return self.handle(request)

    def api_requests(self) -> list[httpx.Request]:
        return [request for request in self.requests if str(request.url).startswith(API)]


def client_for(recorder: Recorder, sleeps: list[float] | None = None) -> Client:
    record = sleeps if sleeps is not None else []
    return Client(API, KEY, transport=httpx.MockTransport(recorder), sleep=record.append)


@pytest.mark.parametrize("output_format", ["png", "rle", "polygon", "cutout"])
def test_segment_sends_a_local_image_and_decodes_masks_of_every_format(
    output_format: str, tmp_path: Path
) -> None:
    recorder = Recorder(
        lambda request: httpx.Response(200, json=job_body(output_format=output_format)), output_format
    )
    path = tmp_path / "photo.png"
    Image.fromarray(IMAGE).save(path)
    with client_for(recorder) as client:
        result = client.segment(path, "red thing", output_format=output_format, region="us-east")
    [submit] = recorder.api_requests()
    body = json.loads(submit.content)
    assert body["image_url"] == "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    assert body["prompt"] == "red thing" and body["region"] == "us-east"
    assert body["options"] == {"output_format": output_format}
    assert submit.headers["Prefer"] == "wait=60"
    assert submit.headers["Idempotency-Key"].startswith("sdk-")
    assert submit.headers["Authorization"] == f"Bearer {KEY}"
    [mask] = result.masks
    assert mask.label == "red square" and mask.box == (2, 1, 7, 4)
    np.testing.assert_array_equal(mask.array, MASK)
    assert mask.image.mode == "L" and np.asarray(mask.image).max() == 255
    assert (mask.cutout is not None) == (output_format == "cutout")
    # Mask files come from S3 without the API key.
    downloads = [request for request in recorder.requests if str(request.url).startswith(S3)]
    assert len(downloads) == 1 and "Authorization" not in downloads[0].headers
    saved = result.save(tmp_path / "out")
    assert [path.name for path in saved] == [f"photo.mask-0{SUFFIXES[output_format]}", "seg_1.overlay.png"]
    overlay = np.asarray(Image.open(saved[1]))
    assert overlay.shape == (6, 8, 3) and not np.array_equal(overlay[MASK][0], overlay[~MASK][0])


def test_masks_download_once_and_only_when_asked() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, json=job_body(masks=2)))
    with client_for(recorder) as client:
        result = client.get("seg_1")
        assert len(recorder.requests) == 1
        first = result.masks[0]
        first.array, first.image, first.data  # noqa: B018
    assert len(recorder.requests) == 2


def test_segment_polls_with_prefer_wait_until_the_job_ends() -> None:
    answers = iter([job_body("queued"), job_body("running"), job_body("succeeded")])
    recorder = Recorder(lambda request: httpx.Response(200, json=next(answers)))
    with client_for(recorder) as client:
        result = client.segment(IMAGE, prompts=["red thing"])
    submit, *polls = recorder.api_requests()
    assert json.loads(submit.content)["prompts"] == ["red thing"]
    assert [request.method for request in polls] == ["GET", "GET"]
    assert all(request.headers["Prefer"].startswith("wait=") for request in polls)
    assert result.status == "succeeded"


def test_retries_429_and_5xx_with_backoff_honouring_retry_after_under_one_idempotency_key() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"error": {"code": "service_unavailable", "message": "down"}}),
            httpx.Response(
                429, headers={"Retry-After": "2"}, json={"error": {"code": "rate_limited", "message": ""}}
            ),
            httpx.Response(202, json=job_body()),
        ]
    )
    recorder = Recorder(lambda request: next(answers))
    sleeps: list[float] = []
    with client_for(recorder, sleeps) as client:
        client.submit("https://images.test/a.jpg", "red thing")
    keys = {request.headers["Idempotency-Key"] for request in recorder.api_requests()}
    assert len(recorder.api_requests()) == 3 and len(keys) == 1
    assert 0 <= sleeps[0] <= RetryPolicy().backoff_s and sleeps[1] == 2.0


def test_network_errors_are_retried_then_raised() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    recorder = Recorder(refuse)
    sleeps: list[float] = []
    with client_for(recorder, sleeps) as client, pytest.raises(httpx.ConnectError):
        client.get("seg_1")
    assert (
        len(recorder.requests) == RetryPolicy().max_retries + 1 and len(sleeps) == RetryPolicy().max_retries
    )


def test_client_errors_are_raised_at_once_with_their_code() -> None:
    error = {
        "error": {"code": "invalid_request", "message": "prompt: too long", "details": {"field": "prompt"}}
    }
    recorder = Recorder(lambda request: httpx.Response(422, json=error))
    with client_for(recorder) as client, pytest.raises(SmartsegAPIError) as raised:
        client.submit("https://images.test/a.jpg", "x" * 400)
    assert raised.value.status == 422 and raised.value.code == "invalid_request"
    assert raised.value.details == {"field": "prompt"} and len(recorder.requests) == 1
    # Retries run out: the last answer is raised.
    recorder = Recorder(lambda request: httpx.Response(502, text="bad gateway"))
    with client_for(recorder) as client, pytest.raises(SmartsegAPIError) as raised:
        client.get("seg_1")
    assert raised.value.status == 502 and raised.value.code == "http_error"


def test_failed_and_unfinished_jobs_raise_from_segment() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, json=job_body("failed")))
    with client_for(recorder) as client, pytest.raises(SegmentationFailed, match="image_invalid") as raised:
        client.segment("https://images.test/a.jpg", "red thing")
    assert raised.value.segmentation.status == "failed"
    recorder = Recorder(lambda request: httpx.Response(200, json=job_body("running")))
    with client_for(recorder) as client, pytest.raises(SegmentationTimeout) as timed_out:
        client.segment("https://images.test/a.jpg", "red thing", timeout_s=0)
    assert timed_out.value.job_id == "seg_1"


def test_image_inputs() -> None:
    png = image_url(Image.fromarray(IMAGE))
    assert png.startswith("data:image/png;base64,")
    jpeg = io.BytesIO()
    Image.fromarray(IMAGE).save(jpeg, format="JPEG")
    assert image_url(jpeg.getvalue()).startswith("data:image/jpeg;base64,")
    bmp = io.BytesIO()
    Image.fromarray(IMAGE).save(bmp, format="BMP")
    assert image_url(bmp.getvalue()).startswith("data:image/png;base64,")  # re-encoded
    assert image_url("https://images.test/a.jpg") == "https://images.test/a.jpg"
    with pytest.raises(ClientError, match="not an image"):
        image_url(b"plain text")
    with pytest.raises(ClientError, match="serve it over http"):
        image_url(
            np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8),
            max_request_bytes=200_000,
        )
    with pytest.raises(ClientError, match="exactly one of prompt or prompts"):
        Client(API, KEY, transport=httpx.MockTransport(Recorder(lambda r: httpx.Response(500)))).submit(IMAGE)


def test_list_follows_cursors_up_to_the_limit() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        cursor = int(request.url.params.get("cursor", "0"))
        return httpx.Response(
            200,
            json={"object": "list", "data": [job_body(id=f"seg_{cursor + i}") for i in range(2)],
                  "next_cursor": str(cursor + 2) if cursor < 4 else None},
        )  # fmt: skip

    recorder = Recorder(page)
    with client_for(recorder) as client:
        assert [job.id for job in client.list(status="succeeded", page_size=2)] == [
            f"seg_{i}" for i in range(6)
        ]
        assert len(list(client.list(limit=3))) == 3
    assert recorder.api_requests()[0].url.params["status"] == "succeeded"


def test_verify_webhook_checks_signature_timestamp_and_rotation() -> None:
    old, new = (f"whsec_{base64.b64encode(bytes([n]) * 24).decode()}" for n in (1, 2))
    body = json.dumps({"type": "segmentation.completed", "data": {"id": "seg_1"}})
    now = datetime.now(UTC)
    signature = Webhook(new).sign("msg_1", now, body)
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": signature,
    }
    assert verify_webhook(headers, body.encode(), new)["data"]["id"] == "seg_1"
    assert verify_webhook(headers, body, [old, new])["type"] == "segmentation.completed"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, old)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body.replace("seg_1", "seg_2"), new)
    stale = now - timedelta(minutes=10)
    stale_headers = headers | {"Webhook-Timestamp": str(int(stale.timestamp())),
                               "Webhook-Signature": Webhook(new).sign("msg_1", stale, body)}  # fmt: skip
    with pytest.raises(WebhookVerificationError):
        verify_webhook(stale_headers, body, new)


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 <= RetryPolicy().delay(1, later) <= 20
    assert RetryPolicy(max_backoff_s=5).delay(1, "600") == 5


def test_connection_comes_from_arguments_environment_or_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SMARTSEG_API_URL", "SMARTSEG_API_KEY", "SMARTSEG_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ClientError, match="no API URL and API key"):
        connection(None, None)
    (tmp_path / ".smartseg").mkdir()
    (tmp_path / ".smartseg" / "smartseg.env").write_text(
        "SMARTSEG_API_URL='http://127.0.0.1:9/'\nSMARTSEG_API_KEY='sk-file'\n"
    )
    assert connection(None, None) == ("http://127.0.0.1:9", "sk-file")
    monkeypatch.setenv("SMARTSEG_API_KEY", "sk-env")
    assert connection(None, None) == ("http://127.0.0.1:9", "sk-env")
    assert connection("http://other:1", "sk-arg") == ("http://other:1", "sk-arg")


def test_the_package_exports_the_sdk_lazily() -> None:
    assert smartseg.Client is Client and smartseg.AsyncClient is AsyncClient
    with pytest.raises(AttributeError):
        smartseg.NotAThing  # noqa: B018


def test_async_client_downloads_masks_before_returning() -> None:
    recorder = Recorder(
        lambda request: httpx.Response(200, json=job_body(masks=2, output_format="rle")), "rle"
    )

    async def run() -> list[np.ndarray]:
        async with AsyncClient(API, KEY, transport=httpx.MockTransport(recorder)) as client:
            result = await client.segment(IMAGE, "red thing")
            listed = await client.get("seg_1")
            with pytest.raises(ClientError, match="not downloaded"):
                listed.masks[0].array  # noqa: B018
            await client.download(listed)
            return [*result.arrays(), *listed.arrays()]

    arrays = asyncio.run(run())
    assert len(arrays) == 4 and all(np.array_equal(array, MASK) for array in arrays)
