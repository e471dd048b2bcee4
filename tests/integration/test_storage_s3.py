"""Mask storage against a real S3 server (SeaweedFS): upload, presigned GET, credentials, retries."""

from __future__ import annotations

import httpx
import pytest
from botocore.exceptions import ClientError

from shared.errors import StorageUnavailable
from shared.launcher import free_ports
from shared.settings import Settings
from shared.storage import MaskStorage, object_key

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
    bad = MaskStorage.from_settings(service_settings.updated(s3_secret_key="wrong-secret"))
    with pytest.raises(ClientError):
        bad.get(object_key("seg_test", 1, "photo.mask-0.png"))


def test_unreachable_storage_fails_after_retries(service_settings: Settings) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    storage = MaskStorage.from_settings(service_settings.updated(s3_endpoint=dead, s3_upload_attempts=2))
    with pytest.raises(StorageUnavailable) as error:
        storage.put("k", b"x", "image/png")
    assert error.value.code == "storage_unavailable"
