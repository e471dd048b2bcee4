"""The Python SDK: ``Client`` and ``AsyncClient`` for the smartseg HTTP API.

>>> from smartseg import Client
>>> client = Client("http://127.0.0.1:8000", api_key="sk-...")   # or from SMARTSEG_API_URL/KEY
>>> result = client.segment("photo.jpg", "red ball")               # a URL, path, bytes, PIL image or array
>>> result.masks[0].array.shape, result.masks[0].label            # ((480, 640), 'red ball')
>>> result.save("out/")

Requests that fail with 408, 429 or a 5xx, or on the network, are retried with exponential backoff and
jitter, honouring ``Retry-After``; every submit carries an ``Idempotency-Key`` (one is made when none is
given), so a retried submit never makes a second job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import email.utils
import io
import json
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeAlias

import httpx
import numpy as np
from PIL import Image
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from smartseg.shared.env_file import find_env_file, read_env_file
from smartseg.shared.errors import ClientError, SmartsegAPIError
from smartseg.shared.results import Mask, Segmentation
from smartseg.shared.schemas import Batch, Region, RegionList, Usage
from smartseg.shared.settings import Settings

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ImageInput",
    "Mask",
    "RetryPolicy",
    "Segmentation",
    "SegmentationFailed",
    "SegmentationTimeout",
    "SmartsegAPIError",
    "WebhookVerificationError",
    "verify_webhook",
]

ImageInput: TypeAlias = "str | Path | bytes | Image.Image | np.ndarray"

DEFAULT_TIMEOUT_S = 120.0  # how long segment() waits for a job to finish
MAX_WAIT_S = 60  # the API holds a `Prefer: wait` request at most this long
CONNECT_TIMEOUT_S = 10.0
READ_MARGIN_S = 30.0  # beyond a request's wait, for the answer to arrive
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The API refuses bodies over SMARTSEG_MAX_REQUEST_BYTES (16 MiB by default); room for the JSON around.
DEFAULT_MAX_REQUEST_BYTES = int(Settings.model_fields["max_request_bytes"].default)
REQUEST_OVERHEAD_BYTES = 64 * 1024
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
JOB_OPTIONS = ("pipeline", "box_threshold", "text_threshold", "max_masks", "output_format")


class SegmentationFailed(ClientError):
    """``segment()`` ended in ``failed`` or ``canceled``; ``.segmentation`` is the job as it ended."""

    code = "segmentation_failed"

    def __init__(self, segmentation: Segmentation) -> None:
        reason = segmentation.error or "canceled"
        super().__init__(f"job {segmentation.id} {segmentation.status}: {reason}")
        self.segmentation = segmentation


class SegmentationTimeout(ClientError):
    """``segment()`` or ``wait()`` gave up before the job ended; the job goes on: ``client.get(job_id)``."""

    code = "timeout"

    def __init__(self, job_id: str, timeout_s: float) -> None:
        super().__init__(f"job {job_id} did not finish within {timeout_s:g}s; get it later by its id")
        self.job_id = job_id


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a ``Retry-After`` from the server is waited out instead."""

    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds before retry number ``retry`` (1-based)."""
        asked = _retry_after_s(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1)))


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str | list[str]) -> dict[str, Any]:
    """The event of a webhook delivery after checking its Standard Webhooks signature and timestamp.

    ``secret`` is the ``whsec_...`` of ``GET /v1/webhooks/secret``; during a rotation pass both the new
    and the old one. Raises ``WebhookVerificationError`` for a wrong signature, a stale timestamp (more
    than five minutes off) or missing headers.

    >>> event = verify_webhook(request.headers, request.body, "whsec_...")
    >>> event["type"], event["data"]["id"]   # ('segmentation.completed', 'seg_...')
    """
    payload = body.decode() if isinstance(body, bytes) else body
    lowered = {name.lower(): value for name, value in headers.items()}
    secrets = [secret] if isinstance(secret, str) else secret
    error: WebhookVerificationError | None = None
    for candidate in secrets:
        try:
            event: dict[str, Any] = Webhook(candidate).verify(payload, lowered)
            return event
        except WebhookVerificationError as exc:
            error = exc
    raise error or WebhookVerificationError("no secret given")


def connection(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The API URL and key: as given, else ``SMARTSEG_API_URL``/``SMARTSEG_API_KEY`` from the
    environment, else from the env file ``smartseg up`` wrote (``SMARTSEG_ENV_FILE`` or
    ``./.smartseg/smartseg.env``)."""
    found = {
        name: os.environ[name] for name in ("SMARTSEG_API_URL", "SMARTSEG_API_KEY") if name in os.environ
    }
    env_file = find_env_file()
    if env_file is not None and env_file.is_file():
        found = {**read_env_file(env_file), **found}
    url = base_url or found.get("SMARTSEG_API_URL")
    key = api_key or found.get("SMARTSEG_API_KEY")
    if not url or not key:
        missing = " and ".join(name for name, value in (("API URL", url), ("API key", key)) if not value)
        raise ClientError(
            f"no {missing}: pass them, set SMARTSEG_API_URL and SMARTSEG_API_KEY, or run where "
            "`smartseg up` was started (it writes .smartseg/smartseg.env)"
        )
    return url.rstrip("/"), key


def image_url(image: ImageInput, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> str:
    """What the API takes as ``image_url``: URLs as they are, local images as a ``data:`` URL."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return image
    data, content_type = image_bytes(image)
    encoded_size = 4 * ((len(data) + 2) // 3) + len(content_type) + 13
    if encoded_size > max_request_bytes - REQUEST_OVERHEAD_BYTES:
        raise ClientError(
            f"the image is {len(data):,} bytes, {encoded_size:,} as a data URL; the API takes requests "
            f"up to {max_request_bytes:,} bytes: serve it over http(s) and pass its URL, or shrink it"
        )
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def image_bytes(image: ImageInput) -> tuple[bytes, str]:
    """A local image as file bytes the API decodes (JPEG, PNG, WebP as they are; others as PNG)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        return _png(image), "image/png"
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    content_type = _sniff(data)
    if content_type:
        return data, content_type
    try:
        with Image.open(io.BytesIO(data)) as other:  # BMP, TIFF, GIF...: sent as PNG
            return _png(other), "image/png"
    except (OSError, ValueError) as exc:
        raise ClientError(f"not an image the SDK can read: {exc}") from exc


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in IMAGE_TYPES.items() if data.startswith(magic)), None)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def source_image(image: ImageInput, download: Callable[[str], bytes]) -> Callable[[], Image.Image | None]:
    """Loads the submitted image on first use (for overlays), once."""
    loaded: list[Image.Image | None] = []

    def load() -> Image.Image | None:
        if not loaded:
            loaded.append(_open_source(image, download))
        return loaded[0]

    return load


def _open_source(image: ImageInput, download: Callable[[str], bytes]) -> Image.Image | None:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    if isinstance(image, str) and image.startswith("data:"):
        try:
            return Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1], validate=True)))
        except (IndexError, binascii.Error, OSError):
            return None
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        try:
            return Image.open(io.BytesIO(download(image)))
        except (httpx.HTTPError, ClientError, OSError):
            return None
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return Image.open(io.BytesIO(data))


def submit_body(
    image: ImageInput,
    prompt: str | None,
    prompts: Sequence[str] | None,
    fields: dict[str, Any],
    max_request_bytes: int,
) -> dict[str, Any]:
    """The ``POST /v1/segmentations`` body; keyword options go into ``options`` or the top level."""
    if (prompt is None) == (prompts is None):
        raise ClientError("give exactly one of prompt or prompts")
    body: dict[str, Any] = {"image_url": image_url(image, max_request_bytes)}
    body.update({"prompt": prompt} if prompt is not None else {"prompts": list(prompts or [])})
    options = {name: fields.pop(name) for name in JOB_OPTIONS if fields.get(name) is not None}
    body.update({name: value for name, value in fields.items() if value is not None})
    if options:
        body["options"] = options
    return body


def batch_body(
    items: list[dict[str, Any]] | None,
    manifest_url: str | None,
    defaults: dict[str, Any] | None,
    webhook_url: str | None,
) -> dict[str, Any]:
    return _present(
        {"items": items, "manifest_url": manifest_url, "defaults": defaults, "webhook_url": webhook_url}
    )


def usage_params(start: str | None, end: str | None, by_day: bool) -> dict[str, Any]:
    return _present({"from": start, "to": end, "group_by": "day" if by_day else None})


def submit_headers(idempotency_key: str | None, wait_s: float = 0) -> dict[str, str]:
    """A submit's headers: its Idempotency-Key (one is made when none is given, so a retried submit finds
    the job the first try made), and ``Prefer: wait``."""
    return {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}", **wait_header(wait_s)}


def api_error(response: httpx.Response) -> SmartsegAPIError:
    try:
        error = response.json()["error"]
        return SmartsegAPIError(
            response.status_code, str(error["code"]), str(error.get("message", "")), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        return SmartsegAPIError(response.status_code, "http_error", response.text[:200])


def wait_header(wait_s: float) -> dict[str, str]:
    seconds = int(min(MAX_WAIT_S, wait_s))
    return {"Prefer": f"wait={seconds}"} if seconds > 0 else {}


def _timeout(timeout_s: float) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S)


class Client:
    """A blocking client. Use it as a context manager, or call ``close()``.

    >>> with Client() as client:                    # SMARTSEG_API_URL/KEY, or `smartseg up`'s env file
    ...     result = client.segment("toys.jpg", prompts=["red ball", "blue block"], pipeline="lite")
    ...     for mask in result.masks:
    ...         print(mask.prompt, mask.label, mask.score, mask.box)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url, key = connection(base_url, api_key)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.max_request_bytes = max_request_bytes
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=_timeout(READ_MARGIN_S),
            transport=transport,
        )
        # Mask and image downloads go to presigned S3 URLs and the like: never with the API key.
        self._downloads = httpx.Client(timeout=_timeout(READ_MARGIN_S), transport=transport)
        self._transport = transport

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    # Jobs

    def segment(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        prompts: Sequence[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Segmentation:
        """Submit a job, wait for it, and return it; raises ``SegmentationFailed`` when it fails or is
        canceled and ``SegmentationTimeout`` when it runs past ``timeout_s``.

        ``fields``: ``pipeline``, ``box_threshold``, ``text_threshold``, ``max_masks``, ``output_format``
        (into ``options``), and ``region``, ``region_policy``, ``priority``, ``webhook_url``,
        ``webhook_events``.

        >>> client.segment("https://example.com/shoes.jpg", "left shoe", pipeline="grounded-sam")
        >>> client.segment(numpy_rgb_array, prompts=["mug", "mug handle"], output_format="rle")
        """
        deadline = time.monotonic() + timeout_s
        job = self.submit(
            image, prompt, prompts=prompts, wait_s=timeout_s, idempotency_key=idempotency_key, **fields
        )
        job = self._until_done(job, timeout_s, deadline)
        if job.status != "succeeded":
            raise SegmentationFailed(job)
        return job

    def submit(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        prompts: Sequence[str] | None = None,
        wait_s: float = 0,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Segmentation:
        """Submit a job and return it as it stands (after up to ``wait_s``, at most 60 s)."""
        body = submit_body(image, prompt, prompts, fields, self.max_request_bytes)
        headers = submit_headers(idempotency_key, wait_s)
        response = self._request("POST", "/v1/segmentations", json=body, headers=headers, wait_s=wait_s)
        return self._segmentation(response.json(), source_image(image, self._download))

    def get(self, job_id: str, *, wait_s: float = 0) -> Segmentation:
        """The job now, or once it ends if that is within ``wait_s`` (at most 60 s)."""
        response = self._request(
            "GET", f"/v1/segmentations/{job_id}", headers=wait_header(wait_s), wait_s=wait_s
        )
        return self._segmentation(response.json())

    def wait(self, job_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Segmentation:
        """The job once it has ended; ``SegmentationTimeout`` after ``timeout_s``."""
        return self._until_done(self.get(job_id), timeout_s, time.monotonic() + timeout_s)

    def _until_done(self, job: Segmentation, timeout_s: float, deadline: float) -> Segmentation:
        """Asks again with ``Prefer: wait`` until the job ends; keeps the submitted image for overlays."""
        while not job.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SegmentationTimeout(job.id, timeout_s)
            job = replace(self.get(job.id, wait_s=max(1.0, left)), source=job.source)
        return job

    def cancel(self, job_id: str) -> Segmentation:
        """Cancel a queued or running job (409 ``job_already_finished`` once it has ended)."""
        return self._segmentation(self._request("POST", f"/v1/segmentations/{job_id}/cancel").json())

    def list(
        self,
        *,
        status: str | None = None,
        batch_id: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Segmentation]:
        """Your jobs, newest first, page after page (at most ``limit`` of them)."""
        params: dict[str, Any] = {"limit": page_size, "status": status, "batch_id": batch_id}
        yielded = 0
        while True:
            page = self._request("GET", "/v1/segmentations", params=_present(params)).json()
            for body in page["data"]:
                if limit is not None and yielded >= limit:
                    return
                yield self._segmentation(body)
                yielded += 1
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    # Batches, usage, regions

    def batch(
        self,
        items: builtins.list[dict[str, Any]] | None = None,
        *,
        manifest_url: str | None = None,
        defaults: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Submit a batch: up to 1,000 inline items (each like a job body) or a JSONL manifest URL."""
        body = batch_body(items, manifest_url, defaults, webhook_url)
        headers = submit_headers(idempotency_key)
        return Batch.model_validate(self._request("POST", "/v1/batches", json=body, headers=headers).json())

    def get_batch(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._request("GET", f"/v1/batches/{batch_id}").json())

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """One result per item, in manifest order: ``{index, key, job_id, status, ...}``."""
        response = self._request("GET", f"/v1/batches/{batch_id}/results")
        for line in response.text.splitlines():
            if line.strip():
                yield json.loads(line)

    def backfill(
        self, manifest: str | Path, output: str | Path | None = None, *, status: IO[str] | None = None
    ) -> int:
        """A local JSONL manifest through the batches API, results appended to ``output`` (default
        ``MANIFEST.results.jsonl``); run it again after an interruption and it goes on where it was.
        Returns 0 when every item succeeded, else 1."""
        from smartseg.shared.backfill import backfill

        manifest = Path(manifest)
        target = Path(output) if output else manifest.with_suffix(".results.jsonl")
        return backfill(self, manifest, target, status=status or sys.stderr)

    def usage(self, start: str | None = None, end: str | None = None, *, by_day: bool = False) -> Usage:
        """What was billed over UTC days ``start``..``end`` (``YYYY-MM-DD``; default the last 30)."""
        params = usage_params(start, end, by_day)
        return Usage.model_validate(self._request("GET", "/v1/usage", params=params).json())

    def regions(self) -> builtins.list[Region]:
        """Each region's health, queue depths and pipelines."""
        return RegionList.model_validate(self._request("GET", "/v1/regions").json()).data

    # Transport

    def _segmentation(
        self, body: dict[str, Any], source: Callable[[], Image.Image | None] | None = None
    ) -> Segmentation:
        return Segmentation.from_body(body, self._download, source or (lambda: None))

    def _download(self, url: str) -> bytes:
        """A presigned output URL (or a source image URL), retried like API calls.

        Masks are read lazily, often after the ``with Client()`` block has closed the client: then a
        client of its own fetches the file."""
        if not self._downloads.is_closed:
            return self._send(lambda: self._downloads.get(url)).content
        with httpx.Client(timeout=_timeout(READ_MARGIN_S), transport=self._transport) as downloads:
            return self._send(lambda: downloads.get(url)).content

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        wait_s: float = 0,
    ) -> httpx.Response:
        timeout = _timeout(min(MAX_WAIT_S, wait_s) + READ_MARGIN_S)
        return self._send(
            lambda: self._http.request(
                method, path, json=json, params=params, headers=headers, timeout=timeout
            )
        )

    def _send(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        for retry in range(self.retry.max_retries + 1):
            last = retry == self.retry.max_retries
            try:
                response = send()
            except httpx.TransportError:
                if last:
                    raise
                self._sleep(self.retry.delay(retry + 1))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._sleep(self.retry.delay(retry + 1, response.headers.get("Retry-After")))
                continue
            if response.is_error:
                raise api_error(response)
            return response
        raise AssertionError("unreachable: the last try returns or raises")


class AsyncClient:
    """The same API for asyncio. Masks of what ``segment()`` returns are downloaded before it returns
    (all at once), so reading ``mask.array`` never blocks the event loop; for jobs from ``get()`` or
    ``list()`` call ``await client.download(job)`` first.

    >>> async with AsyncClient() as client:
    ...     results = await asyncio.gather(*(client.segment(path, "red ball") for path in paths))
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, key = connection(base_url, api_key)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.max_request_bytes = max_request_bytes
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=_timeout(READ_MARGIN_S),
            transport=transport,
        )
        self._downloads = httpx.AsyncClient(timeout=_timeout(READ_MARGIN_S), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._downloads.aclose()

    async def segment(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        prompts: Sequence[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Segmentation:
        """As ``Client.segment``, with the masks downloaded."""
        deadline = time.monotonic() + timeout_s
        job = await self.submit(
            image, prompt, prompts=prompts, wait_s=timeout_s, idempotency_key=idempotency_key, **fields
        )
        if not job.done:
            job = await self.wait(job.id, timeout_s=max(0.0, deadline - time.monotonic()))
        if job.status != "succeeded":
            raise SegmentationFailed(job)
        await self.download(job)
        return replace(job, source=source_image(image, self._unavailable))

    async def submit(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        prompts: Sequence[str] | None = None,
        wait_s: float = 0,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Segmentation:
        body = submit_body(image, prompt, prompts, fields, self.max_request_bytes)
        headers = submit_headers(idempotency_key, wait_s)
        response = await self._request("POST", "/v1/segmentations", json=body, headers=headers, wait_s=wait_s)
        return self._segmentation(response.json())

    async def get(self, job_id: str, *, wait_s: float = 0) -> Segmentation:
        path = f"/v1/segmentations/{job_id}"
        return self._segmentation(
            (await self._request("GET", path, headers=wait_header(wait_s), wait_s=wait_s)).json()
        )

    async def wait(self, job_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Segmentation:
        deadline = time.monotonic() + timeout_s
        job = await self.get(job_id)
        while not job.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SegmentationTimeout(job_id, timeout_s)
            job = await self.get(job_id, wait_s=max(1.0, left))
        return job

    async def cancel(self, job_id: str) -> Segmentation:
        return self._segmentation((await self._request("POST", f"/v1/segmentations/{job_id}/cancel")).json())

    async def list(
        self,
        *,
        status: str | None = None,
        batch_id: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Segmentation]:
        params: dict[str, Any] = {"limit": page_size, "status": status, "batch_id": batch_id}
        yielded = 0
        while True:
            page = (await self._request("GET", "/v1/segmentations", params=_present(params))).json()
            for body in page["data"]:
                if limit is not None and yielded >= limit:
                    return
                yield self._segmentation(body)
                yielded += 1
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    async def batch(
        self,
        items: builtins.list[dict[str, Any]] | None = None,
        *,
        manifest_url: str | None = None,
        defaults: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        body = batch_body(items, manifest_url, defaults, webhook_url)
        headers = submit_headers(idempotency_key)
        return Batch.model_validate(
            (await self._request("POST", "/v1/batches", json=body, headers=headers)).json()
        )

    async def get_batch(self, batch_id: str) -> Batch:
        return Batch.model_validate((await self._request("GET", f"/v1/batches/{batch_id}")).json())

    async def usage(self, start: str | None = None, end: str | None = None, *, by_day: bool = False) -> Usage:
        params = usage_params(start, end, by_day)
        return Usage.model_validate((await self._request("GET", "/v1/usage", params=params)).json())

    async def regions(self) -> builtins.list[Region]:
        return RegionList.model_validate((await self._request("GET", "/v1/regions")).json()).data

    async def download(self, job: Segmentation) -> Segmentation:
        """Fetch every mask file of ``job`` at once, so its arrays and images need no more I/O."""
        files = await asyncio.gather(*(self._download(mask.output.url) for mask in job.masks))
        for mask, data in zip(job.masks, files, strict=True):
            mask._data = data
        return job

    def _segmentation(self, body: dict[str, Any]) -> Segmentation:
        return Segmentation.from_body(body, self._unavailable)

    @staticmethod
    def _unavailable(url: str) -> bytes:
        raise ClientError("this mask is not downloaded yet: `await client.download(job)` first")

    async def _download(self, url: str) -> bytes:
        return (await self._send(lambda: self._downloads.get(url))).content

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        wait_s: float = 0,
    ) -> httpx.Response:
        timeout = _timeout(min(MAX_WAIT_S, wait_s) + READ_MARGIN_S)
        return await self._send(
            lambda: self._http.request(
                method, path, json=json, params=params, headers=headers, timeout=timeout
            )
        )

    async def _send(self, send: Callable[[], Any]) -> httpx.Response:
        for retry in range(self.retry.max_retries + 1):
            last = retry == self.retry.max_retries
            try:
                response: httpx.Response = await send()
            except httpx.TransportError:
                if last:
                    raise
                await asyncio.sleep(self.retry.delay(retry + 1))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self.retry.delay(retry + 1, response.headers.get("Retry-After")))
                continue
            if response.is_error:
                raise api_error(response)
            return response
        raise AssertionError("unreachable: the last try returns or raises")


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
