"""Mask files expire with their jobs (``SMARTSEG_JOB_TTL_S``): by an S3 lifecycle rule where the server
takes one, else by a sweep the router runs.

A lifecycle rule counts whole days, so it is used only when the TTL is a whole number of days; any other
TTL, and a server that refuses the rule, get the sweep, which deletes ``jobs/`` objects older than the
TTL a page at a time. Nothing outside ``jobs/`` is touched (model weights, manifests).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from smartseg.shared.billing import SECONDS_PER_DAY
from smartseg.shared.storage import JOBS_PREFIX, MaskStorage

log = logging.getLogger(__name__)

RULE_ID = "smartseg-job-masks"
SWEEP_INTERVAL_S = 60.0  # between walks of the prefix; pages of one walk follow each other at once
SWEEP_PAGE = 1000  # keys listed (and at most deleted) per sweep step: one S3 list and one batch delete
# Codes of a server without lifecycle support; anything else (a denied call, a network error) is
# logged and swept too, so masks never outlive their jobs for a misconfiguration.
NO_LIFECYCLE_CODES = frozenset({"NotImplemented", "MalformedXML", "InvalidRequest"})


class Expiry(enum.StrEnum):
    LIFECYCLE = "lifecycle"
    SWEEP = "sweep"


class MaskRetention:
    def __init__(self, storage: MaskStorage, ttl_s: int, now: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.ttl_s = ttl_s
        self.now = now
        self.expiry: Expiry | None = None
        self._cursor: str | None = None  # where the sweep goes on
        self._next_sweep = 0.0

    def tick(self) -> None:
        """From the active router's loop: set up once, then sweep a page whenever one is due. S3 trouble
        is logged and tried again later; it never stops the router's other work."""
        try:
            if self.expiry is None:
                self.apply()
            if self.expiry is Expiry.SWEEP and self.now() >= self._next_sweep:
                self.sweep()
                self._next_sweep = self.now() + (0.0 if self._cursor else SWEEP_INTERVAL_S)
        except (ClientError, BotoCoreError) as exc:
            log.warning("mask retention: S3 failed (%s); trying again in %.0fs", exc, SWEEP_INTERVAL_S)
            self._next_sweep = self.now() + SWEEP_INTERVAL_S

    def apply(self) -> Expiry:
        """Put the lifecycle rule (keeping the bucket's other rules) if it can express the TTL and the
        server takes it; otherwise the router sweeps."""
        self.expiry = Expiry.SWEEP
        if self.ttl_s % SECONDS_PER_DAY:
            log.info("mask retention: sweeping (a job TTL of %ss is not whole days)", self.ttl_s)
            return self.expiry
        try:
            self._put_rule(self.ttl_s // SECONDS_PER_DAY)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            how = log.info if code in NO_LIFECYCLE_CODES else log.warning
            how("mask retention: sweeping (the S3 server refused a lifecycle rule: %s)", code)
            return self.expiry
        except BotoCoreError as exc:
            log.warning("mask retention: sweeping (could not set a lifecycle rule: %s)", exc)
            return self.expiry
        self.expiry = Expiry.LIFECYCLE
        log.info(
            "mask retention: an S3 lifecycle rule expires jobs/ after %d days", self.ttl_s // SECONDS_PER_DAY
        )
        return self.expiry

    def _put_rule(self, days: int) -> None:
        client, bucket = self.storage.client, self.storage.bucket
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        except ClientError:  # none yet (NoSuchLifecycleConfiguration)
            rules = []
        ours: dict[str, Any] = {
            "ID": RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": JOBS_PREFIX},
            "Expiration": {"Days": days},
        }
        others = [rule for rule in rules if rule.get("ID") != RULE_ID]
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, ours]}
        )

    def sweep(self) -> int:
        """Delete the expired objects of one page of ``jobs/``; returns how many. Called again and again,
        it walks the whole prefix and starts over."""
        client, bucket = self.storage.client, self.storage.bucket
        listing: dict[str, Any] = {"Bucket": bucket, "Prefix": JOBS_PREFIX, "MaxKeys": SWEEP_PAGE}
        if self._cursor:
            listing["ContinuationToken"] = self._cursor
        page = client.list_objects_v2(**listing)
        self._cursor = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        oldest_kept = self.now() - self.ttl_s
        expired = [
            {"Key": item["Key"]}
            for item in page.get("Contents", [])
            if item["LastModified"].timestamp() < oldest_kept
        ]
        if expired:
            client.delete_objects(Bucket=bucket, Delete={"Objects": expired, "Quiet": True})
            log.info("mask retention: deleted %d expired mask files", len(expired))
        return len(expired)
