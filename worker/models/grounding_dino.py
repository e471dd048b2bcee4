"""Text-prompted boxes from GroundingDINO: every phrase of a job in one forward pass.

The phrases go in as one caption, "red shoe. mug handle.", and each query's token scores are read back per
phrase: a box belongs to the phrase whose tokens score highest for it. That is the published model's
own label rule (tokens over ``text_threshold``), kept per phrase so N prompts cost one detector call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from smartseg.shared.jobspec import JobOptions
from smartseg.worker.models.image_cache import ImageCache, image_key
from smartseg.worker.pipeline.base import Candidate, PassLog, StageTimes, as_box

NMS_IOU = 0.5  # queries often repeat an object; overlapping boxes of one phrase keep the best


def caption_of(phrases: Sequence[str]) -> str:
    return " ".join(f"{phrase.lower().strip()}." for phrase in phrases)


def phrase_token_spans(offsets: list[tuple[int, int]], phrases: Sequence[str]) -> list[list[int]]:
    """Token indices of each phrase in ``caption_of(phrases)``, from the tokenizer's character offsets."""
    spans: list[list[int]] = [[] for _ in phrases]
    start = 0
    bounds = []
    for phrase in phrases:
        end = start + len(phrase.lower().strip())
        bounds.append((start, end))
        start = end + 2  # ". "
    for token, (char_start, char_end) in enumerate(offsets):
        if char_end <= char_start:
            continue  # special tokens
        for index, (low, high) in enumerate(bounds):
            if char_start >= low and char_end <= high:
                spans[index].append(token)
                break
    return spans


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """(n, n) IoU of x0, y0, x1, y1 boxes."""
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    overlap = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return overlap / np.maximum(areas[:, None] + areas[None, :] - overlap, 1e-9)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes kept, best first: each suppresses the lower-scored boxes overlapping it."""
    order = np.argsort(-scores, kind="stable")
    overlaps = pairwise_iou(boxes[order]) > iou
    suppressed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for rank, index in enumerate(order):
        if not suppressed[rank]:
            kept.append(int(index))
            suppressed |= overlaps[rank]
    return kept


@dataclass(frozen=True)
class Detections:
    """One forward pass, before thresholds: per-query boxes and scores, per phrase and over all tokens."""

    corners: np.ndarray  # (queries, 4) x0, y0, x1, y1 in pixels
    phrase_scores: np.ndarray  # (queries, phrases): best token probability within each phrase
    query_scores: np.ndarray  # (queries,): best token probability over the whole caption

    def candidates(self, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        """A query belongs to the phrase it scores highest on, if it clears both thresholds."""
        best_phrase = self.phrase_scores.argmax(axis=1)
        widths = self.corners[:, 2] - self.corners[:, 0]
        heights = self.corners[:, 3] - self.corners[:, 1]
        usable = (self.query_scores > options.box_threshold) & (widths >= 1) & (heights >= 1)
        results = []
        for index, phrase in enumerate(phrases):
            scores = self.phrase_scores[:, index]
            keep = np.flatnonzero(usable & (best_phrase == index) & (scores > options.text_threshold))
            kept = keep[non_max_suppression(self.corners[keep], scores[keep], NMS_IOU)] if len(keep) else keep
            results.append([Candidate(phrase, float(scores[q]), as_box(self.corners[q])) for q in kept])
        return results


class GroundingDinoDetector:
    """Implements the pipeline's Detector protocol.

    Raw detections are kept in an LRU keyed by image and caption: a repeat of a job (a retry, a re-run of
    a batch, the same request from another client) skips the detector, and other thresholds still apply.
    """

    def __init__(self, model: Any, processor: Any, device: torch.device, cache: ImageCache) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.cache = cache
        self.max_tokens = int(model.config.max_text_len)
        self.calls = 0  # (image, caption) detections computed, for tests and metrics
        self.times = StageTimes()
        self.passes = PassLog()

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        return self.detect_many([image], [phrases], [options])[0]

    def detect_many(
        self, images: list[np.ndarray], phrases: list[Sequence[str]], options: list[JobOptions]
    ) -> list[list[list[Candidate]]]:
        """Several images, each with its phrases: every (image, caption) not cached is detected, in one
        forward pass with the others of the same input size and caption length (so nothing is padded and
        each result equals its pass alone)."""
        keys = [image_key(image) for image in images]
        groups = [self._groups_that_fit(names) for names in phrases]
        # Each (image, caption) a job asks for: its cache key, image index and phrases.
        wanted = [
            (f"{key}:{caption_of(group)}", index, group)
            for index, (key, image_groups) in enumerate(zip(keys, groups, strict=True))
            for group in image_groups
        ]
        found, missing_at = self.cache.split([entry for entry, _, _ in wanted])
        if missing_at:
            missing = {entry: wanted[position][1:] for entry, position in missing_at.items()}
            found |= self._detect_missing(images, missing)
        return [
            [
                candidate
                for group in image_groups
                for candidate in found[f"{key}:{caption_of(group)}"].candidates(group, option)
            ]
            for key, image_groups, option in zip(keys, groups, options, strict=True)
        ]

    def _detect_missing(
        self, images: list[np.ndarray], missing: dict[str, tuple[int, list[str]]]
    ) -> dict[str, Detections]:
        with self.times.measure("preprocess"):
            pixels = {
                index: self.processor.image_processor(
                    images=Image.fromarray(images[index]), return_tensors="pt"
                )
                for index in {index for index, _ in missing.values()}
            }
            texts = {
                entry: self.processor.tokenizer(
                    caption_of(group),
                    return_tensors="pt",
                    return_offsets_mapping=True,
                    truncation=True,
                    max_length=self.max_tokens,
                )
                for entry, (_, group) in missing.items()
            }
        batches: dict[tuple[Any, ...], list[str]] = {}  # input size and caption length -> entries
        for entry, (index, _) in missing.items():
            shape = (tuple(pixels[index]["pixel_values"].shape), texts[entry]["input_ids"].shape[1])
            batches.setdefault(shape, []).append(entry)
        detected: dict[str, Detections] = {}
        for entries in batches.values():
            outputs = self._run(
                [pixels[missing[entry][0]] for entry in entries], [texts[entry] for entry in entries]
            )
            for row, entry in enumerate(entries):
                index, group = missing[entry]
                height, width = images[index].shape[:2]
                detections = _detections(outputs, row, texts[entry], group, width, height)
                self.calls += 1
                self.passes.append(("detector", index))
                self.cache.put(entry, detections)
                detected[entry] = detections
        return detected

    def _groups_that_fit(self, phrases: Sequence[str]) -> list[list[str]]:
        """Usually one group; a caption longer than the text encoder's window is split."""
        if len(self.processor.tokenizer(caption_of(phrases))["input_ids"]) <= self.max_tokens:
            return [list(phrases)]  # the common case: one tokenization, not one per phrase
        groups: list[list[str]] = [[]]
        for phrase in phrases:
            candidate = [*groups[-1], phrase]
            if (
                groups[-1]
                and len(self.processor.tokenizer(caption_of(candidate))["input_ids"]) > self.max_tokens
            ):
                groups.append([phrase])
            else:
                groups[-1] = candidate
        return groups

    @torch.inference_mode()
    def _run(self, pixels: list[Any], texts: list[Any]) -> Any:
        """One forward pass over (image, caption) pairs of one input size and one caption length."""
        with self.times.measure("detect"):
            parts = [{**image, **text} for image, text in zip(pixels, texts, strict=True)]
            inputs = {
                name: torch.cat([part[name] for part in parts]).to(self.device)
                for name in parts[0]
                if name != "offset_mapping"  # the caption's character spans, read back per row
            }
            return self.model(**inputs)


def _detections(outputs: Any, row: int, text: Any, phrases: list[str], width: int, height: int) -> Detections:
    """Row ``row`` of a forward pass, as the detections of its image and caption (``phrases``)."""
    offsets = [tuple(pair) for pair in text["offset_mapping"][0].tolist()]
    token_scores = outputs.logits[row].sigmoid().float().cpu().numpy()  # (queries, max_text_len)
    boxes = outputs.pred_boxes[row].float().cpu().numpy()  # (queries, 4) cx, cy, w, h in 0..1
    corners = np.stack(
        [
            (boxes[:, 0] - boxes[:, 2] / 2) * width,
            (boxes[:, 1] - boxes[:, 3] / 2) * height,
            (boxes[:, 0] + boxes[:, 2] / 2) * width,
            (boxes[:, 1] + boxes[:, 3] / 2) * height,
        ],
        axis=1,
    ).clip(0, [width, height, width, height])
    spans = phrase_token_spans(offsets, phrases)
    phrase_scores = np.stack(
        [token_scores[:, span].max(axis=1) if span else np.zeros(len(boxes)) for span in spans], axis=1
    )
    return Detections(corners, phrase_scores, token_scores[:, : len(offsets)].max(axis=1))
