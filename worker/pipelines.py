"""Segmentation pipelines by name. `lite` needs nothing; the others load models (and import torch)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from smartseg.shared.errors import UnknownPipeline
from smartseg.shared.settings import Settings
from smartseg.worker.models.catalog import ModelNames
from smartseg.worker.pipeline.base import Pipeline
from smartseg.worker.pipeline.lite import build_lite_pipeline

if TYPE_CHECKING:  # torch is imported only by workers that load a model pipeline
    from smartseg.worker.models.runtime import Runtime

PIPELINE_NAMES = ("lite", "grounded-sam", "grounded-sam2", "sam3")
DEFAULT_EMBEDDING_CACHE_SIZE = 8


def model_names(settings: Settings) -> ModelNames:
    return ModelNames(settings.detector_model, settings.sam_model, settings.sam2_model, settings.sam3_model)


def required_models(name: str, models: ModelNames) -> list[str]:
    """The model folders pipeline ``name`` loads."""
    check_pipeline_name(name)
    return {
        "lite": [],
        "grounded-sam": [models.detector, models.sam],
        "grounded-sam2": [models.detector, models.sam2],
        "sam3": [models.sam3],
    }[name]


def check_pipeline_name(name: str) -> None:
    if name not in PIPELINE_NAMES:
        raise UnknownPipeline(f"unknown pipeline {name!r}", {"pipelines": list(PIPELINE_NAMES)})


def build_pipeline(
    name: str,
    models: ModelNames | None = None,
    folders: Mapping[str, Path] | None = None,
    runtime: Runtime | None = None,
    embedding_cache_size: int = DEFAULT_EMBEDDING_CACHE_SIZE,
) -> Pipeline:
    """Pipeline ``name``; a model pipeline needs its model names, their verified folders and the worker's
    runtime (``Runtime.choose``, once per worker)."""
    check_pipeline_name(name)  # unknown names fail here, before torch is imported
    if name == "lite":
        return build_lite_pipeline()
    if models is None or folders is None or runtime is None:
        raise UnknownPipeline(f"pipeline {name!r} needs its models' folders and a runtime")
    from smartseg.worker.models.pipelines import build_model_pipeline

    return build_model_pipeline(name, models, folders, runtime, embedding_cache_size)
