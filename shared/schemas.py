"""Pydantic schemas of the HTTP API: what clients send and what they get back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smartseg.shared.jobspec import JobOptions, Priority, RegionPolicy

MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 300
# data: URLs travel inside the job record; bigger images should be served over http(s).
MAX_IMAGE_URL_CHARS = 12 * 1024 * 1024


class SegmentationOptions(JobOptions):
    """``options`` of a request: the job options, and the pipeline (the deployment default if omitted)."""

    pipeline: str | None = Field(
        default=None, description="Pipeline name; the deployment default if omitted."
    )


class SegmentationRequest(BaseModel):
    """Body of ``POST /v1/segmentations``: exactly one of ``prompt`` and ``prompts``."""

    model_config = ConfigDict(extra="forbid")

    image_url: str = Field(min_length=1, max_length=MAX_IMAGE_URL_CHARS, description="http(s) or data: URL")
    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    prompts: list[str] | None = Field(default=None, min_length=1, max_length=MAX_PROMPTS)
    region: str | None = Field(default=None, max_length=64)
    region_policy: RegionPolicy = Field(
        default="prefer",
        description=(
            "prefer: run in `region` while it is healthy, else in the healthy region with the least queued "
            "work per worker; require: only ever in `region` (data residency), waiting there if it is down."
        ),
    )
    priority: Priority = "interactive"
    options: SegmentationOptions = Field(default_factory=SegmentationOptions)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt must not be blank")
        return value.strip() if value is not None else None

    @field_validator("prompts")
    @classmethod
    def _prompts_in_range(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [item.strip() for item in value]
        if any(not item or len(item) > MAX_PROMPT_CHARS for item in cleaned):
            raise ValueError(f"each prompt must have 1..{MAX_PROMPT_CHARS} non-blank characters")
        return cleaned

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> SegmentationRequest:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give exactly one of 'prompt' and 'prompts'")
        return self

    def prompt_list(self) -> list[str]:
        return [self.prompt] if self.prompt is not None else list(self.prompts or [])


class JobUrls(BaseModel):
    get: str
    cancel: str


class JobError(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class MaskOutput(BaseModel):
    type: Literal["mask"] = "mask"
    url: str = Field(description="Presigned GET URL, made fresh on every read.")
    filename: str
    content_type: str
    width: int
    height: int
    prompt: str
    label: str
    score: float
    box: list[int] = Field(description="[x0, y0, x1, y1] in pixels, x1/y1 exclusive.")
    area: int
    model: str


class PromptResult(BaseModel):
    prompt: str
    result: Literal["match", "no_match"]
    masks: int


class JobMetrics(BaseModel):
    queue_s: float | None = None
    fetch_s: float | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    upload_s: float | None = None
    total_s: float | None = None
    detector_runs: int | None = Field(default=None, description="Detector forward passes for this job.")
    image_encoder_runs: int | None = Field(
        default=None, description="Image-encoder passes; 0 when the image's embedding was cached."
    )


class Billing(BaseModel):
    billed: bool
    amount_usd: float
    currency: Literal["USD"] = "USD"


class JobInput(BaseModel):
    image_url: str
    prompts: list[str]
    priority: Priority
    region: str | None
    region_policy: RegionPolicy = "prefer"
    options: SegmentationOptions


class RegionEvent(BaseModel):
    """One step of a job's way through the regions."""

    event: Literal["queued", "moved", "started", "requeued"] = Field(
        description="queued: placed at submit; moved: its region died, it went to another before running; "
        "started: a worker there claimed it; requeued: that worker stopped renewing its lease, it runs again."
    )
    region: str
    attempt: int
    at: str


class Job(BaseModel):
    """A segmentation job as the API shows it."""

    id: str
    object: Literal["segmentation"] = "segmentation"
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    input: JobInput
    region: str
    attempts: int
    history: list[RegionEvent] = Field(description="Where the job was queued, moved, started, requeued.")
    cancel_requested: bool
    result: Literal["match", "no_match"] | None
    outputs: list[MaskOutput]
    prompt_results: list[PromptResult]
    error: JobError | None
    metrics: JobMetrics
    billing: Billing
    created_at: str
    started_at: str | None
    finished_at: str | None
    urls: JobUrls


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    next_cursor: str | None


class ErrorBody(BaseModel):
    error: JobError


class Region(BaseModel):
    region: str
    healthy: bool = Field(description="At least one live worker (a heartbeat younger than its TTL).")
    live_workers: int
    queued_interactive: int
    queued_batch: int
    running: int = Field(description="Live workers busy with a job.")
    seconds_since_last_beat: float | None = Field(description="Since any worker of the region last beat.")
    pipelines: list[str] = Field(description="Pipelines its live workers serve.")


class RegionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Region]
