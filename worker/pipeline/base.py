"""The pipeline skeleton shared by every backend: detector -> selector -> segmenter behind small protocols.

A detector only understands noun phrases ("shoe"), so the pipeline strips qualifiers ("left", "largest",
"second from the right") from each prompt first and lets the selector apply them to the detections.

Several jobs' images can go through together (``run_many``): each stage then runs once over all of them,
and a component that can batches its model passes (the image encoders; the detector on images of one
input size); each image's results equal its results alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from smartseg.shared.jobspec import JobOptions
from smartseg.worker.pipeline.prompt import parse_prompt
from smartseg.worker.pipeline.selector import select


@dataclass
class Candidate:
    """One detected region, before (``mask is None``) or after segmentation."""

    label: str
    score: float  # 0..1
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (x1/y1 exclusive)
    mask: np.ndarray | None = None  # bool HxW once segmented
    # What a model's own segmenter needs later, e.g. SAM 3's low-resolution mask logits: masks are then
    # made only for the candidates the selector keeps.
    pending: Any = None


@dataclass
class Segment:
    """One output mask for one prompt."""

    prompt: str
    label: str
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 from the mask's extent (x1/y1 exclusive)
    mask: np.ndarray  # bool HxW, same size as the image
    model: str  # names the pipeline/model that made it, e.g. "lite"

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class PromptResult:
    prompt: str
    segments: list[Segment]  # empty == "no_match": a pipeline never invents a mask


class StageTimes(dict[str, float]):
    """Seconds spent per model stage (preprocess, detect, encode, decode), summed over one pipeline run."""

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = self.get(stage, 0.0) + time.perf_counter() - started


class PassLog(list[tuple[str, int]]):
    """The model passes of one ``run_many``: (kind, index of the image they were for); kinds are
    ``detector`` and ``image_encoder``. A pass several images share is logged for the first of them."""

    def of(self, kind: str, index: int) -> int:
        """How many passes of ``kind`` were for image ``index``."""
        return sum(1 for logged in self if logged == (kind, index))


class Detector(Protocol):
    """Finds candidates for text phrases; drops those under the option thresholds. A detector may also
    offer ``detect_many(images, phrases, options)``, the same for several images at once."""

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        """Return one list of candidates per phrase, in phrase order."""
        ...


class Segmenter(Protocol):
    """Turns candidate boxes into masks. A segmenter may also offer ``segment_many(images, candidates)``,
    the same for several images at once."""

    def segment(self, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        """Return the same candidates, in order, each with a bool HxW ``mask``."""
        ...


@dataclass(frozen=True)
class ImageJob:
    """One job's model input: its (decoded) image, prompts and options."""

    image: np.ndarray  # HxWx3 uint8 RGB
    prompts: Sequence[str]
    options: JobOptions


@dataclass
class ImageRun:
    """One job's model output, and the model passes that were its own."""

    results: list[PromptResult]
    counters: dict[str, int]


def as_box(values: Sequence[float]) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 as plain floats, from any 4-sequence (a tensor row, a numpy row)."""
    x0, y0, x1, y1 = (float(value) for value in values)
    return x0, y0, x1, y1


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The x0, y0, x1, y1 extent (x1/y1 exclusive) of a non-empty bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class Pipeline:
    """Runs all prompts of one image together so detector and segmenter each see the image once."""

    def __init__(self, name: str, model: str, detector: Detector, segmenter: Segmenter) -> None:
        self.name = name
        self.model = model
        self.detector = detector
        self.segmenter = segmenter
        self.last_stage_times = StageTimes()  # of the latest run; components that time stages fill it

    def run(self, image: np.ndarray, prompts: Sequence[str], options: JobOptions) -> list[PromptResult]:
        """Segment ``image`` (HxWx3 uint8 RGB) for every prompt; one result per prompt, in order."""
        return self.run_many([ImageJob(image, prompts, options)])[0].results

    def run_many(self, jobs: Sequence[ImageJob]) -> list[ImageRun]:
        """Several images, each with its prompts, through each stage together; one run per image, in
        order, each equal to that image's ``run`` alone."""
        for job in jobs:
            if job.image.ndim != 3 or job.image.shape[2] != 3:
                raise ValueError(f"expected an HxWx3 RGB image, got shape {job.image.shape}")
        self.last_stage_times = StageTimes()
        passes = PassLog()
        for component in (self.detector, self.segmenter):
            if hasattr(component, "times"):
                component.times = self.last_stage_times
            if hasattr(component, "passes"):
                component.passes = passes
        images = [job.image for job in jobs]
        parsed = [[parse_prompt(prompt) for prompt in job.prompts] for job in jobs]
        phrases = [list(dict.fromkeys(p.phrase for p in prompts)) for prompts in parsed]
        detected = self._detect_many(images, phrases, [job.options for job in jobs])
        chosen: list[list[list[Candidate]]] = []
        for job, prompts, names, found in zip(jobs, parsed, phrases, detected, strict=True):
            height, width = job.image.shape[:2]
            by_phrase = dict(zip(names, found, strict=True))
            chosen.append(
                [select(by_phrase[p.phrase], p, (width, height), job.options.max_masks) for p in prompts]
            )
        segmented = self._segment_many(images, [[c for group in groups for c in group] for groups in chosen])
        runs = []
        for index, (job, groups, done) in enumerate(zip(jobs, chosen, segmented, strict=True)):
            results, start = [], 0
            for prompt, group in zip(job.prompts, groups, strict=True):
                masks = done[start : start + len(group)]
                start += len(group)
                results.append(
                    PromptResult(prompt, [self._segment(prompt, c) for c in masks if _has_mask(c)])
                )
            counters = {
                "detector_runs": passes.of("detector", index),
                "image_encoder_runs": passes.of("image_encoder", index),
            }
            runs.append(ImageRun(results, counters))
        return runs

    def _detect_many(
        self, images: list[np.ndarray], phrases: list[list[str]], options: list[JobOptions]
    ) -> list[list[list[Candidate]]]:
        detect_many = getattr(self.detector, "detect_many", None)
        if detect_many is not None:
            return detect_many(images, phrases, options)
        return [self.detector.detect(*item) for item in zip(images, phrases, options, strict=True)]

    def _segment_many(
        self, images: list[np.ndarray], candidates: list[list[Candidate]]
    ) -> list[list[Candidate]]:
        segment_many = getattr(self.segmenter, "segment_many", None)
        if segment_many is not None:
            return segment_many(images, candidates)
        return [self.segmenter.segment(*item) for item in zip(images, candidates, strict=True)]

    def warm_up(self) -> None:
        """One small run at worker start, so the first job does not pay for lazy initialisation."""
        image = np.full((96, 128, 3), 245, dtype=np.uint8)
        image[24:72, 32:80] = (220, 30, 30)
        self.run(image, ["red square"], JobOptions())

    def counters(self) -> dict[str, int]:
        """Model passes so far, for job metrics and tests; a backend that counts nothing reports 0."""
        encoders = getattr(self.detector, "encoder_calls", 0) + getattr(self.segmenter, "encoder_calls", 0)
        return {"detector_runs": getattr(self.detector, "calls", 0), "image_encoder_runs": encoders}

    def _segment(self, prompt: str, candidate: Candidate) -> Segment:
        mask = np.asarray(candidate.mask, dtype=bool)
        return Segment(prompt, candidate.label, candidate.score, mask_box(mask), mask, self.model)


def _has_mask(candidate: Candidate) -> bool:
    return candidate.mask is not None and bool(candidate.mask.any())
