"""Assembling the model pipelines: GroundingDINO + SAM / SAM 2 boxes-to-masks, and SAM 3 text-to-masks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    Sam2Model,
    Sam3Model,
    SamModel,
    SamProcessor,
)
from transformers.utils import logging as transformers_logging

from smartseg.worker.models.catalog import ModelNames
from smartseg.worker.models.checkpoint import ModelLoadError, load_model, load_processor
from smartseg.worker.models.grounding_dino import GroundingDinoDetector
from smartseg.worker.models.image_cache import ImageCache
from smartseg.worker.models.runtime import Runtime
from smartseg.worker.models.sam import BoxSegmenter, ImageFit, ResizeAndPad, Squash
from smartseg.worker.models.sam3 import Sam3Detector, Sam3Masks
from smartseg.worker.models.square_image import SquareImageProcessor
from smartseg.worker.pipeline.base import Pipeline

# Progress bars for loading weights would fill worker logs; warnings (e.g. unused weights) still show.
transformers_logging.disable_progress_bar()

# The image processors' published defaults, for folders whose processor config leaves them out.
SAM2_INPUT, IMAGENET_MEAN, IMAGENET_STD = 1024, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SAM3_INPUT, HALF_MEAN, HALF_STD = 1008, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
# Detections are a few KB per (image, caption); keep several captions for each cached image.
DETECTIONS_PER_IMAGE = 8


def _square_processor(
    folder: Path, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> SquareImageProcessor:
    try:
        return SquareImageProcessor.from_folder(folder, size, mean, std)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the processor config in {folder}: {exc}") from exc


def build_model_pipeline(
    name: str, models: ModelNames, folders: Mapping[str, Path], runtime: Runtime, embedding_cache_size: int
) -> Pipeline:
    cache = ImageCache(embedding_cache_size)
    if name == "sam3":
        folder = folders[models.sam3]
        sam3 = Sam3Detector(
            load_model(folder, Sam3Model, runtime.device, runtime.dtype),
            load_processor(folder, AutoTokenizer),
            _square_processor(folder, SAM3_INPUT, HALF_MEAN, HALF_STD),
            runtime.device,
            runtime.dtype,
            cache,
        )
        return Pipeline(name, models.sam3, sam3, Sam3Masks())

    # The detector stays in float32: its deformable attention loses too much in half precision.
    dino_folder = folders[models.detector]
    detector = GroundingDinoDetector(
        load_model(dino_folder, GroundingDinoForObjectDetection, runtime.device, torch.float32),
        load_processor(dino_folder, GroundingDinoProcessor),
        runtime.device,
        ImageCache(embedding_cache_size * DETECTIONS_PER_IMAGE),
    )
    fit: ImageFit
    if name == "grounded-sam":
        sam_name = models.sam
        sam = load_model(folders[sam_name], SamModel, runtime.device, runtime.dtype)
        fit = ResizeAndPad(load_processor(folders[sam_name], SamProcessor))
    else:
        sam_name = models.sam2
        sam = load_model(folders[sam_name], Sam2Model, runtime.device, runtime.dtype)
        fit = Squash(_square_processor(folders[sam_name], SAM2_INPUT, IMAGENET_MEAN, IMAGENET_STD))
    segmenter = BoxSegmenter(sam, fit, runtime.device, runtime.dtype, cache)
    return Pipeline(name, f"{models.detector}+{sam_name}", detector, segmenter)
