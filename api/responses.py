"""Responses built from models that are valid by construction."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel

JSON = "application/json"


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The model as JSON; returning it as-is spares FastAPI validating it again."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)
