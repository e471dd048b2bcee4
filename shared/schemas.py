"""Pydantic schemas of the HTTP API: what clients send and what they get back."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from smartseg.shared.jobspec import JobOptions, Priority, RegionPolicy, WebhookEvent

MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 300
# data: URLs travel inside the job record; bigger images should be served over http(s).
MAX_IMAGE_URL_CHARS = 12 * 1024 * 1024
MAX_WEBHOOK_URL_CHARS = 2048
WEBHOOK_URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://"  # schemes match in any case, as everywhere


def integral(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer, so the API does too; 2.5, "2" and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Every integer a request may carry: strict, but 2.0 is 2 (see integral).
JsonInt = Annotated[int, BeforeValidator(integral)]


# A prompt names something: without a letter or digit ("!!!", an emoji) there is nothing to find. In
# Python's regex syntax, [^\W_] is exactly str.isalnum(), which has_word() checks; the schema says the same.
WORD_PATTERN = r"[^\W_]"


def has_word(value: str) -> str:
    """The prompt without the spaces around it; ValueError when it has no letter or digit."""
    if not any(character.isalnum() for character in value):
        raise ValueError("a prompt needs at least one letter or digit")
    return value.strip()


# Request models are strict: besides refusing "0.3" for a number and true for an integer, strict string
# validation refuses text with a lone surrogate, which a job record could not hold or send back.
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A webhook endpoint, wherever one is given (a job, a batch, a key's default).
WebhookUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS, pattern=WEBHOOK_URL_PATTERN)
]
# Lengths count the prompt as sent, as the schema does; the spaces around it are dropped after.
Prompt = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS),
    AfterValidator(has_word),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS, "pattern": WORD_PATTERN}
    ),
]


# The schema says "exactly one of prompt and prompts" as the validators do: one given (not null).
ONE_PROMPT_KIND: JsonDict = {
    "oneOf": [
        {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
        {"required": ["prompts"], "properties": {"prompts": {"type": "array"}}},
    ]
}


def one_kind_of_prompt(prompt: str | None, prompts: list[str] | None) -> None:
    if (prompt is None) == (prompts is None):
        raise ValueError("give exactly one of 'prompt' and 'prompts'")


class SegmentationOptions(JobOptions):
    """``options`` of a request: the job options, and the pipeline (the deployment default if omitted).

    Strict like the request: a number sent as a string or a boolean sent as a number is refused."""

    model_config = ConfigDict(strict=True)

    pipeline: Name | None = Field(
        default=None, description="Pipeline name; the deployment default if omitted."
    )

    _integral_max_masks = field_validator("max_masks", mode="before")(integral)


class SegmentationRequest(BaseModel):
    """Body of ``POST /v1/segmentations``: exactly one of ``prompt`` and ``prompts``."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=ONE_PROMPT_KIND)

    image_url: str = Field(min_length=1, max_length=MAX_IMAGE_URL_CHARS, description="http(s) or data: URL")
    prompt: Prompt | None = Field(default=None, description="What to segment; at least one letter or digit.")
    prompts: list[Prompt] | None = Field(default=None, min_length=1, max_length=MAX_PROMPTS)
    region: Name | None = None
    region_policy: RegionPolicy = Field(
        default="prefer",
        description=(
            "prefer: run in `region` while it is healthy, else in the healthy region with the least queued "
            "work per worker; require: only ever in `region` (data residency), waiting there if it is down."
        ),
    )
    priority: Priority = "interactive"
    options: SegmentationOptions = Field(default_factory=SegmentationOptions)
    webhook_url: WebhookUrl | None = Field(
        default=None,
        description=(
            "http(s) endpoint for this job's events, signed the Standard Webhooks way; the same address "
            "rules as image URLs. Without it, the key's default endpoint (PUT /v1/webhooks/default) if any."
        ),
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        min_length=1,
        max_length=2,
        description=(
            "started: a worker took the job; completed: it ended. Default: the endpoint's, or completed."
        ),
    )

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> SegmentationRequest:
        one_kind_of_prompt(self.prompt, self.prompts)
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
    model_wait_s: float | None = Field(
        default=None, description="Seconds the job waited, held ahead, while the worker's model ran another."
    )
    inference_s: float | None = Field(
        default=None,
        description="Seconds of model work on this job's batch (it ran with batch_size - 1 others).",
    )
    batch_size: int | None = Field(
        default=None, description="Jobs whose model work ran together with this one."
    )
    upload_s: float | None = None
    total_s: float | None = None
    detector_runs: int | None = Field(default=None, description="Detector forward passes for this job.")
    image_encoder_runs: int | None = Field(
        default=None, description="Image-encoder passes; 0 when the image's embedding was cached."
    )


# An exact decimal amount, as a string: "0.12", "12.5", "0". JSON numbers are floats to most clients.
AMOUNT = Field(pattern=r"^[0-9]+(\.[0-9]+)?$", examples=["0.12"], description="US dollars, exact.")


BillingReason = Literal["pending", "succeeded", "no_match", "failed", "canceled"]


class Billing(BaseModel):
    billed: bool
    amount_usd: str = AMOUNT
    currency: Literal["USD"] = "USD"
    reason: BillingReason = Field(
        description=(
            "succeeded: billed; no_match: it succeeded but no prompt found anything, which is not billed "
            "unless SMARTSEG_BILL_NO_MATCH is set; failed and canceled jobs are never billed; pending: not "
            "ended yet."
        )
    )


class UsageDay(BaseModel):
    date: str = Field(description="A UTC day, YYYY-MM-DD.")
    runs: int = Field(description="Billed runs that ended that day.")
    amount_usd: str = AMOUNT


class Usage(BaseModel):
    """The calling key's billed runs (every key of its owner) over a span of UTC days."""

    model_config = ConfigDict(serialize_by_alias=True)  # "from" and "to" are Python keywords

    from_date: str = Field(alias="from", description="First UTC day, YYYY-MM-DD.")
    to_date: str = Field(alias="to", description="Last UTC day, YYYY-MM-DD, included.")
    runs: int
    amount_usd: str = AMOUNT
    currency: Literal["USD"] = "USD"
    days: list[UsageDay] | None = Field(
        description=(
            "Day by day (group_by=day), for the days of the span that can hold figures: none after today, "
            "none older than SMARTSEG_USAGE_RETENTION_DAYS; null without group_by=day."
        )
    )


class JobInput(BaseModel):
    image_url: str
    prompts: list[str]
    priority: Priority
    region: str | None
    region_policy: RegionPolicy = "prefer"
    options: SegmentationOptions
    webhook_url: str | None = None
    webhook_events: list[WebhookEvent] | None = None


class RegionEvent(BaseModel):
    """One step of a job's way through the regions."""

    event: Literal["queued", "moved", "started", "requeued", "finished", "refused"] = Field(
        description="queued: placed at submit; moved: its region died, it went to another before running; "
        "started: a worker there claimed it; requeued: that worker stopped renewing its lease, it runs "
        "again; finished: a run ended the job (succeeded, failed or canceled); refused: a run reached its "
        "end after it had lost the job (its lease ran out), and its result was discarded. `attempt` is the "
        "run's."
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
    history: list[RegionEvent] = Field(
        description="Where the job was queued, moved, started, requeued, and how its runs ended."
    )
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


class WebhookEndpoint(BaseModel):
    """A key's default webhook endpoint: jobs that name no ``webhook_url`` report here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: WebhookUrl
    events: list[WebhookEvent] = Field(default=["completed"], min_length=1, max_length=2)


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_...: verifies the webhook-signature of your deliveries.")
    previous_valid_until: str | None = Field(
        default=None,
        description="After a rotation, until when deliveries also carry the old secret's signature.",
    )


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_s: JsonInt = Field(
        default=86_400, ge=0, le=7 * 86_400, description="How long the old secret keeps signing too."
    )


class DeliveryAttempt(BaseModel):
    at: str
    status_code: int | None = Field(description="What the endpoint answered; null if it never did.")
    latency_ms: float | None
    error: str | None = Field(description="Why there was no answer (timed out, refused address...).")


class DeliveryView(BaseModel):
    id: str = Field(description="The webhook-id: the same on every attempt of this event.")
    event: WebhookEvent
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None
    created_at: str


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryView]


MAX_INLINE_ITEMS = 1000
MAX_ITEM_KEY_CHARS = 255


class BatchItem(BaseModel):
    """One line of a manifest, or one of ``items``: a job's image and prompts, its own options (over the
    batch's), and an optional ``key``: an item whose key already made a job is not run again."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=ONE_PROMPT_KIND)

    image_url: str = Field(min_length=1, max_length=MAX_IMAGE_URL_CHARS)
    prompt: Prompt | None = None
    prompts: list[Prompt] | None = Field(default=None, min_length=1, max_length=MAX_PROMPTS)
    options: SegmentationOptions | None = Field(
        default=None, description="Over the batch's `defaults.options`."
    )
    key: str | None = Field(default=None, min_length=1, max_length=MAX_ITEM_KEY_CHARS)

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> BatchItem:
        one_kind_of_prompt(self.prompt, self.prompts)
        return self


def item_error(exc: ValidationError) -> dict[str, str]:
    """A batch item that is not one, as its results line says: the first few problems."""
    return {"code": "invalid_request", "message": "; ".join(error["msg"] for error in exc.errors()[:5])}


class BatchDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    options: SegmentationOptions = Field(default_factory=SegmentationOptions)
    region: Name | None = None
    region_policy: RegionPolicy = "prefer"


class BatchRequest(BaseModel):
    """Body of ``POST /v1/batches``: ``items`` inline, or a ``manifest_url`` of JSONL, one item a line."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["items"], "properties": {"items": {"type": "array"}}},
                {"required": ["manifest_url"], "properties": {"manifest_url": {"type": "string"}}},
            ]
        },
    )

    items: list[BatchItem] | None = Field(default=None, min_length=1, max_length=MAX_INLINE_ITEMS)
    manifest_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_WEBHOOK_URL_CHARS,
        pattern=r"^([hH][tT][tT][pP][sS]?|[sS]3)://",
        description=(
            "JSONL manifest, read as a stream: http(s) under the image URL rules, or s3://bucket/key under "
            "a prefix the deployment allows (SMARTSEG_MANIFEST_S3_PREFIXES)."
        ),
    )
    defaults: BatchDefaults = Field(default_factory=BatchDefaults)
    webhook_url: WebhookUrl | None = Field(
        default=None,
        description=(
            "Where `batch.completed` goes when every item has ended (else the key's default endpoint, if it "
            "takes `completed`). Items' own jobs send no webhooks."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchRequest:
        if (self.items is None) == (self.manifest_url is None):
            raise ValueError("give exactly one of 'items' and 'manifest_url'")
        return self


class BatchCounts(BaseModel):
    queued_or_running: int
    succeeded: int
    failed: int
    canceled: int
    invalid: int = Field(description="Items refused before they became jobs (see the results).")
    reused: int = Field(description="Items whose key an earlier job had: not run again.")


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    status: Literal["expanding", "running", "completed", "canceled", "failed"] = Field(
        description=(
            "expanding: items are still being made into jobs; running: all are in; completed: all ended; "
            "canceled; failed: the manifest could not be read (the jobs already made run on)."
        )
    )
    source: str = Field(description="`inline`, or the manifest URL.")
    total: int | None = Field(description="Items in the batch; null while the manifest is still being read.")
    submitted: int = Field(description="Items read so far (made into jobs, reused or refused).")
    counts: BatchCounts
    progress: float = Field(description="Share of the items done, 0..1 (0 while the total is unknown).")
    amount_usd: str = AMOUNT
    currency: Literal["USD"] = "USD"
    created_at: str
    completed_at: str | None
    error: JobError | None = None
    webhook_url: str | None = None
    urls: dict[str, str]
