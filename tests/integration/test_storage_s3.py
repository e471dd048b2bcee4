"""Mask storage against a real S3 server (SeaweedFS): upload, presigned GET, credentials, retries."""

from __future__ import annotations

import time

import httpx
import pytest
from botocore.exceptions import ClientError

from smartseg.cli.launcher import free_ports
from smartseg.shared.errors import StorageUnavailable
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage, object_key

pytestmark = pytest.mark.integration


def test_upload_and_presigned_download(service_settings: Settings) -> None:
    storage = MaskStorage.from_settings(service_settings)
    storage.ensure_bucket()
    key = object_key("seg_test", 1, "photo.mask-0.png")
    storage.put(key, b"\x89PNG fake", "image/png")
    assert storage.get(key) == b"\x89PNG fake"
    response = httpx.get(storage.presigned_url(key, 60), timeout=5)
    assert response.status_code == 200
    assert response.content == b"\x89PNG fake"
    assert (
        httpx.get(storage.presigned_url(key, 60).replace("Signature=", "Signature=00"), timeout=5).status_code
        == 403
    )


def test_wrong_credentials_are_refused(service_settings: Settings) -> None:
    key = object_key("seg_test", 1, "guarded.mask-0.png")
    good = MaskStorage.from_settings(service_settings)
    good.ensure_bucket()
    good.put(key, b"x", "image/png")
    bad = MaskStorage.from_settings(service_settings.updated(s3_secret_key="wrong-secret"))
    with pytest.raises(ClientError) as refused:
        bad.get(key)
    # Refused for the signature, not missing: the object is there.
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_upload_with_wrong_credentials_fails_as_storage_unavailable(service_settings: Settings) -> None:
    bad = MaskStorage.from_settings(
        service_settings.updated(s3_secret_key="wrong-secret", s3_upload_attempts=1)
    )
    with pytest.raises(StorageUnavailable):
        bad.put(object_key("seg_test", 1, "refused.mask-0.png"), b"x", "image/png")


def test_upload_keeps_its_content_type_and_survives_a_dropped_connection(service_settings: Settings) -> None:
    # One attempt: the reconnect must happen inside it, not through the retry budget.
    storage = MaskStorage.from_settings(service_settings.updated(s3_upload_attempts=1))
    first, second = object_key("seg_keepalive", 1, "a.mask-0.png"), object_key("seg_keepalive", 1, "b.png")
    storage.put(first, b"one", "image/png")
    storage.uploader.local.connection.sock.close()  # as if the server had closed the idle connection
    storage.put(second, b"two", "image/png")
    head = storage.client.head_object(Bucket=service_settings.s3_bucket, Key=second)
    assert (storage.get(first), storage.get(second), head["ContentType"]) == (b"one", b"two", "image/png")


def test_unreachable_storage_fails_after_retries(service_settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    storage = MaskStorage.from_settings(service_settings.updated(s3_endpoint=dead, s3_upload_attempts=2))
    with pytest.raises(StorageUnavailable) as error:
        storage.put("k", b"x", "image/png")
    assert error.value.code == "storage_unavailable"


@pytest.mark.parametrize("filename", ["a b+c.mask-0.png", "naïve~1.mask-0.png", "x%2F.mask-0.png"])
def test_presigned_urls_of_awkward_keys_download(service_settings: Settings, filename: str) -> None:
    storage = MaskStorage.from_settings(service_settings)
    key = object_key("seg_awkward", 1, filename)
    storage.put(key, filename.encode(), "image/png")
    response = httpx.get(storage.presigned_url(key, 60), timeout=5)
    assert (response.status_code, response.content) == (200, filename.encode())


def test_presigned_urls_name_the_public_endpoint(service_settings: Settings) -> None:
    internal = MaskStorage.from_settings(service_settings)
    key = object_key("seg_public", 1, "p.mask-0.png")
    internal.put(key, b"public", "image/png")
    public_endpoint = str(service_settings.s3_endpoint).replace("127.0.0.1", "localhost")
    storage = MaskStorage.from_settings(service_settings.updated(s3_public_endpoint=public_endpoint))
    url = storage.presigned_url(key, 60)
    assert url.startswith(public_endpoint)
    assert httpx.get(url, timeout=5).content == b"public"


def test_presigned_url_expires(service_settings: Settings) -> None:
    storage = MaskStorage.from_settings(service_settings)
    key = object_key("seg_expiring", 1, "e.mask-0.png")
    storage.put(key, b"soon gone", "image/png")
    url = storage.presigned_url(key, 1)
    time.sleep(2.1)
    assert httpx.get(url, timeout=5).status_code == 403
