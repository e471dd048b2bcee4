"""Box-prompted masks from SAM or SAM 2: one image embedding per image, every box decoded against it.

Both transformers ports share the model interface used here (``get_image_embeddings``, then ``forward``
with ``image_embeddings`` and ``input_boxes``). They differ in how the image is fitted to the model's
square input: SAM resizes the longest side and pads, SAM 2 squashes. An ``ImageFit`` holds that difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from smartseg.worker.models.image_cache import ImageCache, batch_row, image_key
from smartseg.worker.models.square_image import SquareImageProcessor, upscale_logits
from smartseg.worker.pipeline.base import Candidate, PassLog, StageTimes


class ImageFit(Protocol):
    def pixel_values(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The model input and the (h, w) the image occupies inside it."""
        ...

    def masks(self, logits: torch.Tensor, original: tuple[int, int], fitted: tuple[int, int]) -> torch.Tensor:
        """(n, h, w) low-resolution mask logits -> (n, H, W) bool masks of the original image."""
        ...


class ResizeAndPad:
    """SAM: the processor resizes the longest side to the input size and pads the rest."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def pixel_values(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        inputs = self.processor(images=Image.fromarray(image), return_tensors="pt")
        height, width = (int(v) for v in inputs["reshaped_input_sizes"][0])
        return inputs["pixel_values"], (height, width)

    def masks(self, logits: torch.Tensor, original: tuple[int, int], fitted: tuple[int, int]) -> torch.Tensor:
        # The processor takes (images, boxes, masks-per-box, h, w); one image, one mask per box here.
        upscaled = self.processor.post_process_masks(
            logits[None, :, None].float(), [list(original)], reshaped_input_sizes=[list(fitted)]
        )
        return upscaled[0][:, 0]


class Squash:
    """SAM 2: the image is resized to the square input, aspect ratio not kept."""

    def __init__(self, processor: SquareImageProcessor) -> None:
        self.processor = processor

    def pixel_values(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.processor.pixel_values(image), (self.processor.height, self.processor.width)

    def masks(self, logits: torch.Tensor, original: tuple[int, int], fitted: tuple[int, int]) -> torch.Tensor:
        return upscale_logits(logits, original) > 0


@dataclass
class ImageEncoding:
    embeddings: Any  # a tensor (SAM) or a list of feature maps (SAM 2)
    original_size: tuple[int, int]  # h, w
    fitted_size: tuple[int, int]  # h, w the image occupies in the model input


class BoxSegmenter:
    """Implements the pipeline's Segmenter protocol; keeps the best of SAM's three masks by predicted IoU.
    ``segment_many`` encodes the images of several jobs in one batch (every image fits the same square
    input), then decodes each image's boxes against its own embedding."""

    def __init__(
        self, model: Any, fit: ImageFit, device: torch.device, dtype: torch.dtype, cache: ImageCache
    ) -> None:
        self.model = model
        self.fit = fit
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.encoder_calls = 0  # image encoder passes, for tests and metrics
        self.times = StageTimes()
        self.passes = PassLog()

    def segment(self, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        return self.segment_many([image], [candidates])[0]

    def segment_many(
        self, images: list[np.ndarray], candidates: list[list[Candidate]]
    ) -> list[list[Candidate]]:
        wanted = [index for index, found in enumerate(candidates) if found]  # no box, no encoding
        encodings = dict(
            zip(wanted, self.encode_many([images[index] for index in wanted], wanted), strict=True)
        )
        for index in wanted:
            with self.times.measure("decode"):
                masks = self._decode(encodings[index], [candidate.box for candidate in candidates[index]])
            for candidate, mask in zip(candidates[index], masks, strict=True):
                candidate.mask = mask
        return candidates

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEncoding:
        return self.encode_many([image], [0])[0]

    @torch.inference_mode()
    def encode_many(self, images: list[np.ndarray], indexes: list[int]) -> list[ImageEncoding]:
        """The images' encodings, from the cache or from one batched encoder pass over the rest; each pass
        is logged for ``indexes`` (the images' places in the caller's batch)."""
        keys = [image_key(image) for image in images]
        found, missing = self.cache.split(keys)
        if missing:
            with self.times.measure("preprocess"):
                fitted = [self.fit.pixel_values(images[position]) for position in missing.values()]
            with self.times.measure("encode"):
                pixels = torch.cat([values for values, _ in fitted]).to(self.device, self.dtype)
                embeddings = self.model.get_image_embeddings(pixels)
            for row, ((key, position), (_, size)) in enumerate(zip(missing.items(), fitted, strict=True)):
                image = images[position]
                encoding = ImageEncoding(_row(embeddings, row), (image.shape[0], image.shape[1]), size)
                self.encoder_calls += 1
                self.passes.append(("image_encoder", indexes[position]))
                self.cache.put(key, encoding)
                found[key] = encoding
        return [found[key] for key in keys]

    @torch.inference_mode()
    def _decode(
        self, encoding: ImageEncoding, boxes: list[tuple[float, float, float, float]]
    ) -> list[np.ndarray]:
        (height, width), (fitted_h, fitted_w) = encoding.original_size, encoding.fitted_size
        scale = np.array([fitted_w / width, fitted_h / height] * 2, dtype=np.float32)
        input_boxes = torch.from_numpy(np.asarray(boxes, dtype=np.float32) * scale)[None].to(self.device)
        outputs = self.model(
            image_embeddings=encoding.embeddings, input_boxes=input_boxes, multimask_output=True
        )
        best = outputs.iou_scores[0].float().argmax(dim=-1)  # (boxes,)
        chosen = outputs.pred_masks[0, torch.arange(len(boxes)), best].float().cpu()  # (boxes, h, w) logits
        masks = self.fit.masks(chosen, encoding.original_size, encoding.fitted_size)
        return [mask.numpy().astype(bool) for mask in masks]


def _row(embeddings: Any, row: int) -> Any:
    """One image's part of a batched encoder output: a tensor (SAM) or a list of feature maps (SAM 2)."""
    if isinstance(embeddings, torch.Tensor):
        return batch_row(embeddings, row)
    return type(embeddings)(_row(level, row) for level in embeddings)
