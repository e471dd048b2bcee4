"""Mask storage on any S3-compatible server through boto3 (path-style, SigV4)."""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from smartseg.shared.errors import ServiceUnavailable, StorageUnavailable, UploadRejected
from smartseg.shared.settings import Settings

log = logging.getLogger(__name__)

FIRST_RETRY_DELAY_S = 0.25
MAX_RETRY_DELAY_S = 4.0
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
READ_CHUNK_BYTES = 64 * 1024
# What S3 servers answer for a key that is not there (GetObject: NoSuchKey; some servers: a bare 404).
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _drop_expect_header(request: Any, **_: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


def s3_client(settings: Settings, endpoint: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )
    # Masks are small in-memory bodies: `Expect: 100-continue` would only add a round trip per upload.
    client.meta.events.register("before-sign.s3.PutObject", _drop_expect_header)
    return client


JOBS_PREFIX = "jobs/"  # every mask file is under it, and nothing else: what retention expires


def object_key(job_id: str, attempt: int, filename: str) -> str:
    return f"{JOBS_PREFIX}{job_id}/{attempt}/{filename}"


class Presigner:
    """SigV4 query-string signing of path-style GET URLs with botocore's own signer.

    The API presigns every output on every read; going through a boto3 client would add endpoint
    resolution and event hooks to each URL for the same signature, at twice the cost.
    """

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str) -> None:
        self.base = f"{endpoint.rstrip('/')}/{quote(bucket)}/"
        self.credentials = Credentials(access_key, secret_key)
        self.region = region

    def url(self, key: str, ttl_s: int) -> str:
        request = AWSRequest(method="GET", url=self.base + quote(key, safe="/~"))
        S3SigV4QueryAuth(self.credentials, "s3", self.region, expires=ttl_s).add_auth(request)
        return str(request.url)


class SignedUploader:
    """PutObject as one SigV4-signed request (botocore's signer) on a kept-alive connection per thread.

    Uploads are the worker's hottest S3 call: boto3's client machinery (endpoint rules, event hooks,
    parameter validation, response parsing) costs ~1 ms of CPU per mask, three times this path
    (bench/overhead.py). Everything else (bucket setup, reads, deletes) stays on the boto3 client.
    """

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str) -> None:
        parts = urlsplit(endpoint)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base = f"{endpoint.rstrip('/')}/{quote(bucket)}/"
        self.signer = S3SigV4Auth(Credentials(access_key, secret_key), "s3", region)
        self.local = threading.local()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        url = self.base + quote(key, safe="/~")
        request = AWSRequest(method="PUT", url=url, data=data, headers={"Content-Type": content_type})
        request.context["payload_signing_enabled"] = True  # plain-HTTP endpoints need a signed body
        self.signer.add_auth(request)
        path, headers = urlsplit(url).path, dict(request.headers.items())
        kept_alive = getattr(self.local, "connection", None) is not None
        try:
            status, body = self._send(path, data, headers)
        except (OSError, http.client.HTTPException):
            if not kept_alive:
                raise
            # The server closed the idle connection; a PUT is idempotent, so send it again on a new one.
            status, body = self._send(path, data, headers)
        if status != 200:
            raise UploadRejected(f"HTTP {status}: {body[:200]!r}")

    def _send(self, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = self._connection()
        try:
            connection.request("PUT", path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self.local.connection = None
            raise

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self.local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
            connection = kind(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
            connection.connect()
            connection.sock.settimeout(READ_TIMEOUT_S)
            self.local.connection = connection
        return connection


class StoredObject:
    """An object being read: its length, and its body in chunks (closed once read, or when dropped)."""

    def __init__(self, body: Any, length: int) -> None:
        self.body = body
        self.length = length

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self.body.iter_chunks(READ_CHUNK_BYTES)
        finally:
            self.body.close()


class MaskStorage:
    """Uploads outputs and makes presigned GET URLs for them at read time."""

    def __init__(
        self, client: Any, bucket: str, upload_attempts: int, presigner: Presigner, uploader: SignedUploader
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.upload_attempts = upload_attempts
        self.presigner = presigner
        self.uploader = uploader

    @classmethod
    def from_settings(cls, settings: Settings) -> MaskStorage:
        endpoint = settings.require_s3_endpoint()
        credentials = (
            settings.s3_bucket,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            settings.s3_region,
        )
        # Presigned URLs must name the host clients reach, which may differ from the internal one.
        presigner = Presigner(settings.s3_public_endpoint or endpoint, *credentials)
        uploader = SignedUploader(endpoint, *credentials)
        client = s3_client(settings, endpoint)
        return cls(client, settings.s3_bucket, settings.s3_upload_attempts, presigner, uploader)

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload with exponential backoff; StorageUnavailable once the attempts are spent."""
        delay = FIRST_RETRY_DELAY_S
        for attempt in range(1, self.upload_attempts + 1):
            try:
                self.uploader.put(key, data, content_type)
                return
            except (OSError, http.client.HTTPException, UploadRejected, BotoCoreError) as exc:
                log.warning(
                    "upload of %s failed (attempt %d/%d): %s", key, attempt, self.upload_attempts, exc
                )
                if attempt == self.upload_attempts:
                    raise StorageUnavailable(
                        "mask storage is unavailable; the upload failed after retries",
                        {"attempts": attempt},
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def open(self, key: str) -> StoredObject | None:
        """The object's body as a stream of chunks, None if there is no such object; ServiceUnavailable
        when the server cannot be read."""
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
                return None
            raise ServiceUnavailable("mask storage refused the read; try again") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable("mask storage cannot be reached; try again") from exc
        return StoredObject(found["Body"], int(found["ContentLength"]))

    def presigned_url(self, key: str, ttl_s: int) -> str:
        return self.presigner.url(key, ttl_s)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
