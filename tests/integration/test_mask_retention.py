"""Mask files expire with their jobs, against a real S3 server (SeaweedFS): a lifecycle rule when the TTL
is whole days (the bucket's other rules kept), else a sweep of `jobs/` that spares everything else."""

from __future__ import annotations

import secrets
import time

import pytest

from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage, object_key
from smartseg.worker.mask_retention import RULE_ID, Expiry, MaskRetention

pytestmark = pytest.mark.integration
DAY = 24 * 3600


@pytest.fixture
def storage(service_settings: Settings) -> MaskStorage:
    """A bucket of this test's own: a sweep must not reach other tests' masks."""
    own = MaskStorage.from_settings(service_settings.updated(s3_bucket=f"retention-{secrets.token_hex(4)}"))
    own.ensure_bucket()
    return own


def test_a_ttl_of_whole_days_is_a_lifecycle_rule_beside_the_buckets_own(storage: MaskStorage) -> None:
    theirs = {
        "ID": "operator-logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 30},
    }
    storage.client.put_bucket_lifecycle_configuration(
        Bucket=storage.bucket, LifecycleConfiguration={"Rules": [theirs]}
    )
    retention = MaskRetention(storage, ttl_s=7 * DAY)
    assert retention.apply() is Expiry.LIFECYCLE
    assert retention.apply() is Expiry.LIFECYCLE  # again (every router start): still one rule of ours
    rules = {
        rule["ID"]: rule
        for rule in storage.client.get_bucket_lifecycle_configuration(Bucket=storage.bucket)["Rules"]
    }
    assert set(rules) == {"operator-logs", RULE_ID}
    assert rules[RULE_ID]["Expiration"] == {"Days": 7} and rules[RULE_ID]["Filter"] == {"Prefix": "jobs/"}


def test_any_other_ttl_is_swept_page_by_page_and_only_under_jobs(storage: MaskStorage) -> None:
    masks = [object_key(f"seg_{index:024x}", 1, "photo.mask-0.png") for index in range(5)]
    for key in [*masks, "models/sam/manifest.json", "manifests/photos.jsonl"]:
        storage.put(key, b"x", "application/octet-stream")
    clock = [time.time()]
    retention = MaskRetention(storage, ttl_s=3600, now=lambda: clock[0])
    retention.tick()
    assert retention.expiry is Expiry.SWEEP
    assert storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="jobs/")["KeyCount"] == 5  # young
    clock[0] += 30
    retention.tick()  # the next walk is due a minute after the last one
    assert storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="jobs/")["KeyCount"] == 5
    clock[0] += 3600  # past the TTL now
    retention.tick()
    left = [item["Key"] for item in storage.client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])]
    assert sorted(left) == ["manifests/photos.jsonl", "models/sam/manifest.json"]


def test_a_sweep_walks_a_prefix_larger_than_a_page(
    storage: MaskStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smartseg.worker.mask_retention.SWEEP_PAGE", 2)
    for index in range(5):
        storage.put(object_key(f"seg_{index:024x}", 1, "m.png"), b"x", "image/png")
    retention = MaskRetention(storage, ttl_s=3600, now=lambda: time.time() + 7200)
    assert [retention.sweep() for _ in range(3)] == [2, 2, 1]
