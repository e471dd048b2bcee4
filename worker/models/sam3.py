"""SAM 3: text straight to instance masks. The vision features are computed once per image (and cached);
each phrase then costs only the text encoder and the detection and mask heads.

Pre- and post-processing follow transformers' ``Sam3Processor`` (square input, CLIP tokens padded to 32,
scores = query score x presence score, sigmoid masks over 0.5) without its torchvision dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from smartseg.shared.jobspec import JobOptions
from smartseg.worker.models.image_cache import ImageCache, batch_row, image_key
from smartseg.worker.models.square_image import SquareImageProcessor, upscale_logits
from smartseg.worker.pipeline.base import Candidate, PassLog, StageTimes, as_box

TEXT_TOKENS = 32
# Phrases decoded together; each adds ~66 MB of mask logits (200 queries x 288 x 288), so batches stay small.
PHRASES_PER_BATCH = 4
MASK_THRESHOLD = 0.5  # on mask probabilities, as the published post-processing does


class Sam3Detector:
    """Implements the Detector protocol with candidates that already carry their masks."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: SquareImageProcessor,
        device: torch.device,
        dtype: torch.dtype,
        cache: ImageCache,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.encoder_calls = 0
        self.times = StageTimes()
        self.passes = PassLog()
        self._position_encoding: tuple[tuple[tuple[int, ...], ...], Any] | None = None

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        return self.detect_many([image], [phrases], [options])[0]

    @torch.inference_mode()
    def detect_many(
        self, images: list[np.ndarray], phrases: list[Sequence[str]], options: list[JobOptions]
    ) -> list[list[list[Candidate]]]:
        """Several images: their vision features in one batched encoder pass (each image is fitted to the
        same square input), then each image's phrases against its own features."""
        visions = self._vision_features(images)
        return [
            self._detect(vision, image, names, option)
            for vision, image, names, option in zip(visions, images, phrases, options, strict=True)
        ]

    def _detect(
        self, vision: Any, image: np.ndarray, phrases: Sequence[str], options: JobOptions
    ) -> list[list[Candidate]]:
        found: list[list[Candidate]] = []
        for start in range(0, len(phrases), PHRASES_PER_BATCH):
            batch = list(phrases[start : start + PHRASES_PER_BATCH])
            with self.times.measure("preprocess"):
                text = self.tokenizer(
                    batch, return_tensors="pt", padding="max_length", max_length=TEXT_TOKENS, truncation=True
                )
            with self.times.measure("decode"):
                outputs = self.model(
                    vision_embeds=_repeated(vision, len(batch)),
                    input_ids=text["input_ids"].to(self.device),
                    attention_mask=text["attention_mask"].to(self.device),
                )
                for index, phrase in enumerate(batch):
                    found.append(
                        self._instances(outputs, index, phrase, image.shape[0], image.shape[1], options)
                    )
        return found

    def _instances(
        self, outputs: Any, row: int, phrase: str, height: int, width: int, options: JobOptions
    ) -> list[Candidate]:
        scores = outputs.pred_logits[row].float().sigmoid()
        if outputs.presence_logits is not None:
            scores = scores * outputs.presence_logits[row].float().sigmoid()
        keep = torch.nonzero(scores > options.box_threshold).flatten()
        if len(keep) == 0:
            return []
        scale = torch.tensor([width, height, width, height])
        boxes = (outputs.pred_boxes[row, keep].float().cpu() * scale).clamp(min=torch.zeros(4), max=scale)
        logits = outputs.pred_masks[row, keep].float().cpu()  # upscaled later, for the kept ones only
        return [
            Candidate(phrase, float(scores[index]), as_box(box), pending=mask_logits)
            for index, box, mask_logits in zip(keep.tolist(), boxes, logits, strict=True)
        ]

    def _vision_features(self, images: list[np.ndarray]) -> list[Any]:
        keys = [image_key(image) for image in images]
        found, missing = self.cache.split(keys)
        if missing:
            with self.times.measure("preprocess"):
                pixels = torch.cat(
                    [self.image_processor.pixel_values(images[index]) for index in missing.values()]
                )
            with self.times.measure("encode"):
                features = self.model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
            for row, (key, index) in enumerate(missing.items()):
                kept = self._what_the_heads_read(features, row)
                self.encoder_calls += 1
                self.passes.append(("image_encoder", index))
                self.cache.put(key, kept)
                found[key] = kept
        return [found[key] for key in keys]

    def _what_the_heads_read(self, features: Any, row: int) -> Any:
        """Image ``row``'s FPN maps and their position encodings, which depend on the input size alone and
        are shared between images: a cached image then holds less than half of what the encoder returned."""
        encodings = [level[:1] for level in features.fpn_position_encoding]
        shapes = tuple(tuple(level.shape) for level in encodings)
        if self._position_encoding is None or self._position_encoding[0] != shapes:
            self._position_encoding = (shapes, encodings)
        return type(features)(
            fpn_hidden_states=[batch_row(level, row) for level in features.fpn_hidden_states],
            fpn_position_encoding=self._position_encoding[1],
        )


def _repeated(vision: Any, count: int) -> Any:
    """The image's vision features as a batch of ``count`` (views, no copies): one per phrase."""

    def expand(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.expand(count, *value.shape[1:])
        if isinstance(value, (tuple, list)):
            return type(value)(expand(item) for item in value)
        return value

    return type(vision)(**{name: expand(value) for name, value in vision.items()})


class Sam3Masks:
    """The Segmenter half of SAM 3: upscales the mask logits of the candidates the selector kept."""

    def __init__(self) -> None:
        self.times = StageTimes()

    def segment(self, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return candidates
        with self.times.measure("decode"):
            logits = torch.stack([candidate.pending for candidate in candidates])
            masks = upscale_logits(logits, (image.shape[0], image.shape[1])).sigmoid() > MASK_THRESHOLD
            for candidate, mask in zip(candidates, masks, strict=True):
                candidate.mask, candidate.pending = mask.numpy(), None
        return candidates
