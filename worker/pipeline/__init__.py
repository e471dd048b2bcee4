"""Segmentation pipelines by name; the worker builds the one a job asks for."""

from __future__ import annotations

from collections.abc import Callable

from worker.pipeline.base import Pipeline
from worker.pipeline.lite import build_lite_pipeline

_BUILDERS: dict[str, Callable[[], Pipeline]] = {"lite": build_lite_pipeline}
PIPELINE_NAMES = tuple(_BUILDERS)


def build_pipeline(name: str) -> Pipeline:
    """Build the pipeline called ``name``; raises KeyError naming the known ones."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown pipeline {name!r}; known pipelines: {', '.join(PIPELINE_NAMES)}") from None
    return builder()
