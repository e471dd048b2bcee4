"""``GET /v1/segmentations/{id}/outputs/{index}`` through the real app on a real Redis and S3: the stored file
comes back byte for byte with the output's content type, only to the job's owner, and every way of asking
for an output that is not there is the one ``not_found`` error."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from smartseg.api.app import create_app
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.mask_encoding import encode_mask
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage, object_key

pytestmark = pytest.mark.integration
KEY, OTHER_KEY = "sk-outputs", "sk-outputs-other"
OWNER = hash_api_key(KEY)[:16]  # a bootstrap key's owner (api/auth.py)
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_KEY}"}


@pytest.fixture(scope="module")
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(
        key_prefix=f"outputs-{secrets.token_hex(4)}",
        api_key_hashes=[hash_api_key(KEY), hash_api_key(OTHER_KEY)],
    )


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[JobStore]:
    job_store = JobStore.from_settings(settings)
    yield job_store
    job_store.close()


@pytest.fixture(scope="module")
def storage(settings: Settings) -> MaskStorage:
    mask_storage = MaskStorage.from_settings(settings)
    mask_storage.ensure_bucket()
    return mask_storage


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def queued_job(store: JobStore) -> JobRecord:
    spec = JobSpec(image_url="https://images.example.com/x.png", prompts=("red circle",), pipeline="lite")
    job, _ = store.create(owner=OWNER, spec=spec, region="us-east", filename_stem="x")
    return job


def finished_job(store: JobStore, storage: MaskStorage, formats: list[str]) -> tuple[str, list[bytes]]:
    """A job ended the way a worker ends it, with one uploaded output per format; returns the files too."""
    job = queued_job(store)
    store.claim(job.id, job.token, "w1", 30)
    mask = np.zeros((24, 32), dtype=bool)
    mask[4:12, 6:20] = True
    outputs: list[dict[str, Any]] = []
    files: list[bytes] = []
    for index, output_format in enumerate(formats):
        encoded = encode_mask(mask, output_format)
        filename = f"x.mask-{index}{encoded.suffix}"
        key = object_key(job.id, job.attempt, filename)
        storage.put(key, encoded.data, encoded.content_type)
        files.append(encoded.data)
        outputs.append(
            {
                "key": key,
                "filename": filename,
                "content_type": encoded.content_type,
                "width": 32,
                "height": 24,
                "prompt": "red circle",
                "label": "red circle",
                "score": 0.9,
                "box": [6, 4, 20, 12],
                "area": int(mask.sum()),
                "model": "lite",
            }
        )
    matched = {"prompt": "red circle", "result": "match" if formats else "no_match", "masks": len(formats)}
    store.succeed(job, job.token, outputs=outputs, prompt_results=[matched], metrics={})
    return job.id, files


def assert_not_found(response: Any) -> dict[str, Any]:
    assert response.status_code == 404, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "not_found"
    return error


def test_each_output_comes_back_as_stored_with_its_content_type(
    client: TestClient, store: JobStore, storage: MaskStorage
) -> None:
    job_id, files = finished_job(store, storage, ["png", "rle"])
    png = client.get(f"/v1/segmentations/{job_id}/outputs/0", headers=AUTH)
    assert png.status_code == 200, png.text
    assert png.content == files[0]
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-length"] == str(len(files[0]))
    assert png.headers["content-disposition"] == 'inline; filename="x.mask-0.png"'
    assert png.headers["cache-control"] == "no-store"  # a browser cache keys on the URL, not the key
    assert png.headers["x-content-type-options"] == "nosniff"
    assert "RateLimit" in png.headers  # a read like any other: it spends the key's read budget

    rle = client.get(f"/v1/segmentations/{job_id}/outputs/1", headers=AUTH)
    assert rle.status_code == 200, rle.text
    assert rle.content == files[1]
    assert rle.headers["content-type"] == "application/json"


def test_another_keys_job_is_no_job(client: TestClient, store: JobStore, storage: MaskStorage) -> None:
    job_id, _ = finished_job(store, storage, ["png"])
    theirs = assert_not_found(client.get(f"/v1/segmentations/{job_id}/outputs/0", headers=OTHER_AUTH))
    unknown = assert_not_found(
        client.get("/v1/segmentations/seg_000000000000000000000000/outputs/0", headers=AUTH)
    )
    # The same answer as for an unknown job: nothing says the job exists.
    assert theirs["message"].replace(job_id, "ID") == unknown["message"].replace(
        "seg_000000000000000000000000", "ID"
    )
    assert "details" not in theirs


def test_an_index_past_the_outputs_is_not_found(
    client: TestClient, store: JobStore, storage: MaskStorage
) -> None:
    job_id, _ = finished_job(store, storage, ["png", "polygon"])
    error = assert_not_found(client.get(f"/v1/segmentations/{job_id}/outputs/2", headers=AUTH))
    assert error["details"] == {"outputs": 2, "status": "succeeded"}


@pytest.mark.parametrize("state", ["queued", "no_match"])
def test_a_job_without_outputs_has_none_to_give(
    client: TestClient, store: JobStore, storage: MaskStorage, state: str
) -> None:
    job_id = queued_job(store).id if state == "queued" else finished_job(store, storage, [])[0]
    error = assert_not_found(client.get(f"/v1/segmentations/{job_id}/outputs/0", headers=AUTH))
    assert error["details"] == {"outputs": 0, "status": "queued" if state == "queued" else "succeeded"}


def test_a_file_gone_from_the_bucket_is_not_found(
    client: TestClient, store: JobStore, storage: MaskStorage
) -> None:
    job_id, _ = finished_job(store, storage, ["png"])
    storage.delete(store.get_for_owner(OWNER, job_id).outputs[0]["key"])
    error = assert_not_found(client.get(f"/v1/segmentations/{job_id}/outputs/0", headers=AUTH))
    assert "gone" in error["message"]


@pytest.mark.parametrize("index", ["-1", "x", "1.5"])
def test_an_index_that_is_not_a_position_is_refused(client: TestClient, store: JobStore, index: str) -> None:
    response = client.get(f"/v1/segmentations/{queued_job(store).id}/outputs/{index}", headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_without_a_key_nothing_is_read(client: TestClient, store: JobStore, storage: MaskStorage) -> None:
    job_id, _ = finished_job(store, storage, ["png"])
    response = client.get(f"/v1/segmentations/{job_id}/outputs/0")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_storage_that_cannot_be_reached_is_a_503(
    settings: Settings, store: JobStore, storage: MaskStorage
) -> None:
    job_id, _ = finished_job(store, storage, ["png"])
    # The same Redis (so the same job), but an S3 endpoint nothing listens on.
    unreachable = settings.updated(s3_endpoint="http://127.0.0.1:9")
    with TestClient(create_app(unreachable)) as client:
        response = client.get(f"/v1/segmentations/{job_id}/outputs/0", headers=AUTH)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"


def test_the_operation_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/segmentations/{job_id}/outputs/{index}"][
        "get"
    ]
    assert set(operation["responses"]["200"]["content"]) == {"image/png", "application/json"}
    assert {"401", "404", "422", "429", "503"} <= set(operation["responses"])
    assert operation["security"] == [{"HTTPBearer": []}]
