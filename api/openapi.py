"""The OpenAPI document names this deployment's regions and pipelines, so that what it allows, the API
accepts: a region or pipeline outside them is documented as refused rather than found out by a 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def name_deployment_choices(app: FastAPI, regions: list[str], pipelines: list[str]) -> None:
    """Wrap ``app.openapi`` so the generated document lists ``regions`` and ``pipelines`` as enums."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            models = generate()["components"]["schemas"]
            _only(models["SegmentationRequest"]["properties"]["region"], regions)
            _only(models["BatchDefaults"]["properties"]["region"], regions)
            _only(models["SegmentationOptions"]["properties"]["pipeline"], pipelines)
        assert app.openapi_schema is not None  # generate() stored it
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _only(field: dict[str, Any], choices: list[str]) -> None:
    """A nullable string field (``anyOf: [string, null]``) that takes one of ``choices`` or null."""
    for branch in field["anyOf"]:
        if branch.get("type") == "string":
            branch.clear()
            branch.update({"type": "string", "enum": list(choices)})
