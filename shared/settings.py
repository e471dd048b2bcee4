"""The one settings class. Read once per process (``Settings()``) and passed in; nobody else reads the env."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smartseg.shared.errors import MissingSetting

CommaList = Annotated[list[str], NoDecode]
DeviceSetting = Literal["auto", "cpu", "cuda"]
DtypeSetting = Literal["auto", "float32", "float16", "bfloat16"]


class Settings(BaseSettings):
    """Every ``SMARTSEG_*`` setting. The README has a table of them; keep it in step."""

    model_config = SettingsConfigDict(env_prefix="SMARTSEG_", extra="ignore")

    # Backing services. None means "start an embedded one" (launcher only); api and worker need a value.
    redis_url: str | None = None
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_bucket: str = "masks"
    s3_access_key: str = "smartseg"
    s3_secret_key: SecretStr = SecretStr("smartseg-dev-secret")
    s3_region: str = "us-east-1"
    s3_upload_attempts: int = Field(default=4, ge=1, le=10)
    presign_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    key_prefix: str = "smartseg"

    # Regions: every region the deployment has, and the one this worker serves.
    regions: CommaList = ["us-east", "eu-west"]
    default_region: str = "us-east"
    region: str = "us-east"
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_ttl_s: float = Field(default=3.0, gt=0)
    worker_pool: str = "solo"
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    # Jobs a solo worker holds beside the one on its model (claimed, downloading, decoding, waiting for the
    # model, encoding, uploading); 0: one job at a time, end to end.
    worker_jobs_ahead: int = Field(default=2, ge=0, le=16)
    # Ready jobs of one pipeline whose model work runs as one batch (image encoders batched); the model
    # waits at most batch_wait_ms after the first for more.
    max_batch: int = Field(default=4, ge=1, le=64)
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000)

    # Jobs.
    api_key_hashes: CommaList = []
    pipelines: CommaList = ["lite"]
    default_pipeline: str = "lite"
    # US dollars per billed run, exact to the micro-dollar (a Decimal: "0.12" is 0.12, not a float near it).
    price_usd: Decimal = Field(default=Decimal("0.12"), ge=0, decimal_places=6)
    # Whether a run that found nothing (every prompt no_match) is billed: by default you pay for masks.
    bill_no_match: bool = False
    usage_retention_days: int = Field(default=400, ge=1)  # how long a day's usage figures are kept

    # Webhooks: delivered by `smartseg deliverer` (python -m smartseg.api.deliverer), never by a worker.
    # Seconds to wait after each failed attempt (jittered by a fifth either way); the default adds up to
    # about a day, as Standard Webhooks senders do. Then the delivery is `failed` (redeliver to retry).
    webhook_retry_schedule_s: CommaList = ["5", "300", "1800", "7200", "18000", "36000", "36000"]
    webhook_timeout_s: float = Field(default=10.0, gt=0)  # connect + send + answer, per attempt
    webhook_max_in_flight: int = Field(default=16, ge=1, le=256)  # deliveries sent at once

    # Batches: at most this many of a batch's jobs queued or running at once (the moving window).
    batch_window: int = Field(default=64, ge=1)
    batch_manifest_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    # "bucket/prefix" entries s3:// manifests may be read from, with the service's own S3 credentials;
    # empty: s3:// manifests are refused (they could name any object those credentials reach).
    manifest_s3_prefixes: CommaList = []
    # How long a job is kept: its record, its Idempotency-Key and its mask files expire together.
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    lease_s: float = Field(default=30.0, gt=1)
    # Connect and read timeout of every Redis command: a Redis that does not answer makes the API answer
    # 503 within about this long, instead of hanging (a restart's refused connections are retried).
    redis_timeout_s: float = Field(default=2.0, gt=0)
    # Acknowledged writes: replicas that must hold a new job (WAIT) before its 202, and a run's end before
    # the worker moves on; 0 for a single server, 1 where replicas exist. Not confirmed within the
    # timeout: the submit answers 503 (the job exists and runs: retry with the same Idempotency-Key).
    redis_ack_replicas: int = Field(default=0, ge=0)
    redis_ack_timeout_ms: int = Field(default=500, ge=1)
    # SIGTERM to a worker: it stops taking jobs at once, and the job it runs has this long to finish
    # before it is handed back (a new token, queued again now: not a wait for the lease to expire).
    shutdown_grace_s: float = Field(default=25.0, ge=0)
    visibility_timeout_s: int = Field(default=3600, ge=60)
    max_wait_s: int = Field(default=60, ge=0, le=300)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Token buckets per key and budget: reads, interactive submissions and batch submissions each have
    # their own, so a backfill cannot starve interactive calls. 0: no limit.
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    max_active_jobs: int = Field(default=1000, ge=0)  # queued + running per key; 0: no cap

    # Models (pipelines other than `lite`): weights only from local disk or an S3 prefix, never a hub.
    model_dir: str = "models"
    model_uri: str | None = None  # s3://bucket/prefix, copied into model_dir at worker start
    detector_model: str = "grounding-dino-tiny"
    sam_model: str = "sam-vit-base"
    sam2_model: str = "sam2.1-hiera-tiny"
    sam3_model: str = "sam3"
    device: DeviceSetting = "auto"
    dtype: DtypeSetting = "auto"  # half precision on CUDA only
    torch_threads: int = Field(default=0, ge=0, le=256)  # 0: torch's own default
    embedding_cache_size: int = Field(default=8, ge=0, le=1024)  # image embeddings kept per worker

    # Image fetching and decoding.
    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    fetch_connect_timeout_s: float = 5.0
    fetch_read_timeout_s: float = 10.0
    fetch_total_timeout_s: float = 30.0
    fetch_allowed_networks: CommaList = []
    fetch_allowed_ports: CommaList = ["80", "443"]  # "*": any port
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Pipelines see an image at most this long on its longest side (every model resizes to 1333 or less);
    # a larger one is decoded small, which bounds a worker's memory. Masks come back at full size.
    decode_max_side: int = Field(default=2048, ge=64)

    # HTTP server (api process).
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # A listening socket inherited from the launcher (`smartseg up` binds the port itself, so a taken
    # port fails there, at once, and nothing else can answer in the API's place); host/port then name it.
    api_socket_fd: int | None = None
    public_base_url: str | None = None
    log_level: str = "INFO"
    # json: one JSON object a line (time, level, logger, message, role and job fields), for a log pipeline.
    log_format: Literal["text", "json"] = "text"
    # Prometheus: the API serves /metrics on its own port; a worker, router or deliverer serves its own
    # metrics on this port when set (None or 0: not served). Containers bind 0.0.0.0 to be scraped.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator(
        "regions",
        "api_key_hashes",
        "pipelines",
        "fetch_allowed_networks",
        "fetch_allowed_ports",
        "webhook_retry_schedule_s",
        "manifest_s3_prefixes",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _wait_within_the_read_timeout(self) -> Settings:
        # A WAIT longer than the read timeout would be cut by it: the client could not say how many
        # replicas confirmed the write.
        if self.redis_ack_replicas and self.redis_ack_timeout_ms >= self.redis_timeout_s * 1000:
            raise ValueError("SMARTSEG_REDIS_ACK_TIMEOUT_MS must be under SMARTSEG_REDIS_TIMEOUT_S")
        return self

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _delays(cls, value: list[str]) -> list[str]:
        for delay in value:
            if not (delay.replace(".", "", 1).isdigit() and delay.isascii() and float(delay) >= 0):
                raise ValueError(f"not a delay in seconds: {delay!r}")
        return value

    @field_validator("fetch_allowed_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        for port in value:
            if port != "*" and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
                raise ValueError(f"{port!r} is not a port (1..65535) or *")
        return value

    def updated(self, **changes: object) -> Settings:
        """A validated copy with ``changes`` applied (``model_copy`` would skip validation)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise MissingSetting(
                "SMARTSEG_REDIS_URL is not set (only `smartseg up` starts an embedded Redis)"
            )
        return self.redis_url

    def require_s3_endpoint(self) -> str:
        if not self.s3_endpoint:
            raise MissingSetting("SMARTSEG_S3_ENDPOINT is not set (only `smartseg up` starts an embedded S3)")
        return self.s3_endpoint

    def to_env(self) -> dict[str, str]:
        """These settings as ``SMARTSEG_*`` variables, for child processes the launcher starts."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(value)
            env[f"SMARTSEG_{name.upper()}"] = str(value)
        return env
