"""Segmentation pipelines by name. `lite` needs nothing; the others load models (and import torch)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.settings import Settings
from worker.pipeline.base import Pipeline
from worker.pipeline.lite import build_lite_pipeline

PIPELINE_NAMES = ("lite", "grounded-sam", "grounded-sam2", "sam3")


def required_models(name: str, settings: Settings) -> list[str]:
    """The model folders pipeline ``name`` loads, as named in the settings."""
    models = {
        "lite": [],
        "grounded-sam": [settings.detector_model, settings.sam_model],
        "grounded-sam2": [settings.detector_model, settings.sam2_model],
        "sam3": [settings.sam3_model],
    }
    try:
        return models[name]
    except KeyError:
        raise KeyError(f"unknown pipeline {name!r}; known pipelines: {', '.join(PIPELINE_NAMES)}") from None


def build_pipeline(
    name: str, settings: Settings | None = None, model_folders: Mapping[str, Path] | None = None
) -> Pipeline:
    """Build pipeline ``name``; model pipelines need the settings and the folders of their models."""
    if name == "lite":
        return build_lite_pipeline()
    required_models(name, settings or Settings())  # unknown names fail here, before torch is imported
    if settings is None or model_folders is None:
        raise ValueError(f"pipeline {name!r} needs settings and model folders")
    from worker.models.pipelines import build_model_pipeline

    return build_model_pipeline(name, settings, model_folders)
