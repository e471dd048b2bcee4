"""The one error tree of smartseg: every exception the project raises descends from ``SmartsegError``.

Every error has a stable ``code`` (and the HTTP ``status`` the API answers with, where it reaches a
client). Branches: request errors (4xx), ``ServiceUnavailable``, ``JobFailure`` (the code a failed job
stores), ``StartupError`` (a process refuses to start), ``JobInterrupted`` (a run stops without failing)
and ``ClientError`` (the Python SDK).
"""

from __future__ import annotations

from typing import Any


class SmartsegError(Exception):
    """Raised when something goes wrong that has no more specific class (the root of the tree)."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(SmartsegError):
    """Raised when a request body, parameter or header is malformed or out of range."""

    code = "invalid_request"
    status = 422


class Unauthorized(SmartsegError):
    """Raised when the API key is missing or unknown."""

    code = "unauthorized"
    status = 401


class NotFound(SmartsegError):
    """Raised when a resource does not exist or belongs to another API key."""

    code = "not_found"
    status = 404


class IdempotencyConflict(SmartsegError):
    """Raised when an Idempotency-Key is reused with a different request body."""

    code = "idempotency_conflict"
    status = 409


class JobAlreadyFinished(SmartsegError):
    """Raised when a cancel arrives for a job that already reached a terminal state."""

    code = "job_already_finished"
    status = 409


class ServiceUnavailable(SmartsegError):
    """Raised when a backing service (Redis) cannot be reached."""

    code = "service_unavailable"
    status = 503


class JobFailure(SmartsegError):
    """Raised inside a worker when a job must end as ``failed``; the code is stored on the job."""

    code = "job_failed"
    status = 422


class ImageURLForbidden(JobFailure):
    """Raised when an image URL has a forbidden scheme, host or address (SSRF protection)."""

    code = "image_url_forbidden"


class ImageFetchFailed(JobFailure):
    """Raised when the image cannot be downloaded (network error, timeout, HTTP error status)."""

    code = "image_fetch_failed"


class ImageTooLarge(JobFailure):
    """Raised when the image exceeds the byte or pixel limit."""

    code = "image_too_large"


class ImageInvalid(JobFailure):
    """Raised when the downloaded bytes are not a decodable image."""

    code = "image_invalid"


class PipelineFailed(JobFailure):
    """Raised when the segmentation pipeline itself fails."""

    code = "pipeline_failed"


class StorageUnavailable(JobFailure):
    """Raised when mask uploads to S3-compatible storage fail after retries."""

    code = "storage_unavailable"


class PayloadTooLarge(SmartsegError):
    """Raised when a request body exceeds the API's size limit."""

    code = "payload_too_large"
    status = 413


def rate_limit_headers(
    budget: str, *, quota: int, left: int, reset_s: int, window_s: int | None = None
) -> dict[str, str]:
    """The IETF ``RateLimit-Policy`` / ``RateLimit`` headers (draft-ietf-httpapi-ratelimit-headers) of
    ``budget``: its quota (refilled in ``window_s``), what is left of it, and the seconds until ``reset_s``.
    Sent with every response to a request that spent a token, and with every 429."""
    policy = f'"{budget}";q={quota}' + (f";w={window_s}" if window_s else "")
    return {"RateLimit-Policy": policy, "RateLimit": f'"{budget}";r={left};t={reset_s}'}


class RateLimited(SmartsegError):
    """Raised when a key has used up a rate budget; ``headers`` say when to try again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, headers: dict[str, str], details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.headers = headers

    @classmethod
    def over(
        cls,
        message: str,
        *,
        budget: str,
        quota: int,
        retry_after_s: int,
        left: int = 0,
        window_s: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> RateLimited:
        """The error for a spent ``budget``, with ``Retry-After`` and the RateLimit headers."""
        headers = {
            "Retry-After": str(retry_after_s),
            **rate_limit_headers(budget, quota=quota, left=left, reset_s=retry_after_s, window_s=window_s),
        }
        return cls(message, headers, details)


class TooManyJobs(RateLimited):
    """Raised when a key already has as many queued and running jobs as it may."""

    code = "too_many_jobs"


class UnknownRegion(InvalidRequest):
    """Raised when a request names a region the deployment does not have."""

    code = "unknown_region"


class WebhookURLForbidden(InvalidRequest):
    """Raised when a webhook URL is not http(s) or names an address or port that may not be reached."""

    code = "webhook_url_forbidden"


class ManifestURLForbidden(InvalidRequest):
    """Raised when a batch's manifest URL is not http(s) or names an address or port that may not be read."""

    code = "manifest_url_forbidden"


class UnknownPipeline(InvalidRequest):
    """Raised when a request names a pipeline no worker of the deployment serves."""

    code = "unknown_pipeline"


class UploadRejected(StorageUnavailable):
    """Raised when the S3 server answers an upload with something other than 200 (retried, then final)."""

    code = "upload_rejected"


# Startup: a process refuses to start with settings or files it cannot serve. Never an HTTP answer.


class StartupError(SmartsegError):
    """Raised when a process cannot start with what its settings name; the message says what to fix."""

    code = "startup_failed"


class MissingSetting(StartupError):
    """Raised when a setting this process needs (a Redis URL, an S3 endpoint) is not set."""

    code = "missing_setting"


class ModelWeightsError(StartupError):
    """Raised when a model folder, manifest or copy is missing, incomplete, corrupt or unsafe; the message
    names the file."""

    code = "model_weights_invalid"


class ModelLoadError(StartupError):
    """Raised when a verified model folder still cannot be loaded; the worker must not start with it."""

    code = "model_load_failed"


class RuntimeConfigError(StartupError):
    """Raised when the device or precision settings cannot work on this machine."""

    code = "runtime_config_invalid"


class StackStartError(StartupError):
    """Raised when a service of the local stack (``smartseg up``, the tests' stack) does not start."""

    code = "stack_start_failed"


class WorkerStartError(StartupError):
    """Raised when a worker cannot serve what its settings name; it stops before consuming any job."""

    code = "worker_start_failed"


# Job interruptions: a running job stops at a stage boundary without failing.


class JobInterrupted(SmartsegError):
    """Raised at a stage boundary when a running job must stop; it does not end as ``failed``."""

    code = "job_interrupted"


class JobCanceled(JobInterrupted):
    """Raised at a stage boundary when the client canceled the running job."""

    code = "job_canceled"


class LeaseLost(JobInterrupted):
    """Raised at a stage boundary when another attempt holds the job now: stop and write nothing."""

    code = "lease_lost"


# Client side: what the Python SDK raises.


class ClientError(SmartsegError):
    """Raised by the Python client (``smartseg.shared.client``)."""

    code = "client_error"


class SmartsegAPIError(ClientError):
    """Raised when the API answers with an error body; carries its HTTP status and stable code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}", details)
        self.status = status
        self.code = code
        self.message = message
