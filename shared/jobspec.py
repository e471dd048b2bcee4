"""The typed job: what a client asked for, resolved once by the API and stored with the job.

Option defaults live here and nowhere else: the request schema extends ``JobOptions``, the pipelines take
it as it is. The runner, the view, placement and the router read ``JobSpec`` fields, never a dict.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OutputFormat = Literal["png", "rle", "polygon", "cutout"]
Priority = Literal["interactive", "batch"]
RegionPolicy = Literal["prefer", "require"]
WebhookEvent = Literal["started", "completed"]


class WebhookTarget(BaseModel):
    """Where a job's events are delivered, and which: ``completed`` when it ends (succeeded, failed or
    canceled), ``started`` when a worker claims it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    events: tuple[WebhookEvent, ...] = ("completed",)


class JobOptions(BaseModel):
    """How a job's pipeline runs and what its outputs look like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    box_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="Minimum detection score.")
    text_threshold: float = Field(default=0.25, ge=0.0, le=1.0, description="Minimum phrase-match score.")
    max_masks: int = Field(default=3, ge=1, le=20, description="At most this many masks per prompt.")
    output_format: OutputFormat = Field(
        default="png",
        description=(
            "png: 8-bit 0/255 mask of the image's size; rle: COCO compressed RLE (JSON); polygon: outer and "
            "hole contours in pixels (JSON); cutout: RGBA PNG of the image with the mask as alpha."
        ),
    )


class JobSpec(BaseModel):
    """One accepted job: its image, prompts, resolved pipeline and options, and where it asked to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_url: str
    prompts: tuple[str, ...]
    pipeline: str
    options: JobOptions = JobOptions()
    region: str | None = Field(default=None, description="The region asked for (None: the default).")
    region_policy: RegionPolicy = "prefer"
    priority: Priority = "interactive"
    webhook: WebhookTarget | None = None  # the request's, else the owner's default endpoint

    @property
    def pinned(self) -> bool:
        """Pinned to its region (``region_policy=require``, data residency): it never moves, it waits."""
        return self.region_policy == "require"

    def fingerprint(self) -> str:
        """SHA-256 of what was asked, for Idempotency-Key replays: the same bytes earlier versions hashed
        (the request as stored before specs), so a key replayed across an upgrade still matches."""
        options = {**self.options.model_dump(), "pipeline": self.pipeline}
        request = {**self.model_dump(exclude={"pipeline", "options"}), "prompts": list(self.prompts)}
        if self.webhook is None:
            del request["webhook"]  # a job without one hashes as it did before webhooks
        return hashlib.sha256(
            json.dumps({**request, "options": options}, sort_keys=True).encode()
        ).hexdigest()

    @classmethod
    def from_stored_request(cls, request: dict[str, object]) -> JobSpec:
        """A spec from a record stored before specs existed (``request``: options held the pipeline)."""
        options = dict(request["options"])  # type: ignore[call-overload]
        return cls.model_validate({**request, "pipeline": options.pop("pipeline"), "options": options})
