"""Schemathesis hooks for test_fuzz (loaded through SCHEMATHESIS_HOOKS): a schema-valid request gets URLs
that may really be reached (which addresses may is configuration, not schema): images (a job's, a batch's
items'), a webhook endpoint and a batch manifest, all on the test's loopback image server
(SMARTSEG_FUZZ_IMAGE_URL)."""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if not (positive and isinstance(case.body, dict)):
        return
    reachable = os.environ["SMARTSEG_FUZZ_IMAGE_URL"]
    items = case.body.get("items")
    for body in [case.body, *(items if isinstance(items, list) else [])]:
        for field in ("image_url", "webhook_url", "manifest_url"):
            if isinstance(body, dict) and isinstance(body.get(field), str):
                body[field] = reachable
    if case.operation.path == "/v1/webhooks/default" and isinstance(case.body.get("url"), str):
        case.body["url"] = reachable
