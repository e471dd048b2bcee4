"""The one error tree of smartseg. Every error has a stable ``code`` that the API returns."""

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


class UnknownRegion(InvalidRequest):
    """Raised when a request names a region the deployment does not have."""

    code = "unknown_region"


class UnknownPipeline(InvalidRequest):
    """Raised when a request names a pipeline no worker of the deployment serves."""

    code = "unknown_pipeline"
