"""Schemathesis hooks for test_fuzz (loaded through SCHEMATHESIS_HOOKS): a schema-valid request gets an
image URL that can really be fetched, from SMARTSEG_FUZZ_IMAGE_URL."""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and isinstance(case.body, dict) and isinstance(case.body.get("image_url"), str):
        case.body["image_url"] = os.environ["SMARTSEG_FUZZ_IMAGE_URL"]
