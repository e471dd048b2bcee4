"""The API's JSON as dicts, for tests and benches that check the wire format itself (users have the SDK,
``smartseg.Client``, which returns typed results with decoded masks)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from smartseg.shared.errors import SmartsegAPIError

__all__ = ["JsonClient", "SmartsegAPIError"]

DEFAULT_TIMEOUT_S = 30.0
# The server holds a `Prefer: wait` request at most this long; ask again until the caller's deadline.
WAIT_CHUNK_S = 30


class JsonClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s + WAIT_CHUNK_S,
            transport=transport,
        )

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def create(
        self, body: dict[str, Any], *, idempotency_key: str | None = None, wait_s: int = 0
    ) -> dict[str, Any]:
        headers = {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if wait_s:
            headers["Prefer"] = f"wait={wait_s}"
        return self._call("POST", "/v1/segmentations", json=body, headers=headers)

    def get(self, job_id: str, *, wait_s: int = 0) -> dict[str, Any]:
        headers = {"Prefer": f"wait={wait_s}"} if wait_s else {}
        return self._call("GET", f"/v1/segmentations/{job_id}", headers=headers)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/segmentations/{job_id}/cancel")

    def list(
        self, *, status: str | None = None, cursor: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", "/v1/segmentations", params=params)

    def wait(self, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """The job once it is finished, or as it stands when ``timeout_s`` runs out."""
        deadline = time.monotonic() + timeout_s
        job = self.get(job_id)
        while job["status"] in ("queued", "running") and (left := deadline - time.monotonic()) > 0:
            job = self.get(job_id, wait_s=max(1, min(WAIT_CHUNK_S, int(left))))
        return job

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200]}
            raise SmartsegAPIError(
                response.status_code, error.get("code", ""), error.get("message", ""), error.get("details")
            )
        body: dict[str, Any] = response.json()
        return body
