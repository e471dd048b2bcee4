"""The model pipelines with tiny random-weight checkpoints loaded through the real loading code.

Random weights make the boxes meaningless, so these tests check what does not depend on weight values:
shapes and types, thresholds, how often each model runs, the cache, box-to-prompt mapping, selection.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from smartseg.shared.jobspec import JobOptions
from smartseg.shared.settings import Settings
from smartseg.worker.models.checkpoint import ModelLoadError
from smartseg.worker.models.grounding_dino import caption_of
from smartseg.worker.models.runtime import Runtime
from smartseg.worker.pipeline.base import Candidate, ImageJob, Pipeline
from smartseg.worker.pipelines import build_pipeline, model_names

pytestmark = pytest.mark.integration
MODEL_PIPELINES = ("grounded-sam", "grounded-sam2", "sam3")
EVERYTHING = JobOptions(box_threshold=0.0, text_threshold=0.0, max_masks=3)


def random_image(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def folders(model_dir: Path) -> dict[str, Path]:
    return {path.name: path for path in model_dir.iterdir()}


@pytest.fixture(scope="module")
def model_settings(tiny_model_dir: Path) -> Settings:
    return Settings().updated(model_dir=str(tiny_model_dir), device="cpu", torch_threads=1)


def fresh(name: str, settings: Settings, model_dir: Path) -> Pipeline:
    runtime = Runtime.choose(settings.device, settings.dtype, settings.torch_threads)
    return build_pipeline(name, model_names(settings), folders(model_dir), runtime)


@pytest.fixture(scope="module", params=MODEL_PIPELINES)
def pipeline(request: pytest.FixtureRequest, model_settings: Settings, tiny_model_dir: Path) -> Pipeline:
    return fresh(request.param, model_settings, tiny_model_dir)


def test_pipelines_return_well_formed_masks(pipeline: Pipeline) -> None:
    image = random_image(1, 70, 110)
    results = pipeline.run(image, ["red shoe", "left mug handle"], EVERYTHING)
    assert [result.prompt for result in results] == ["red shoe", "left mug handle"]
    assert 1 <= len(results[0].segments) <= 3
    assert len(results[1].segments) == 1  # a position qualifier keeps one
    for result in results:
        for segment in result.segments:
            assert segment.mask.shape == (70, 110) and segment.mask.dtype == bool and segment.mask.any()
            x0, y0, x1, y1 = segment.box
            assert 0 <= x0 < x1 <= 110 and 0 <= y0 < y1 <= 70
            assert 0.0 <= segment.score <= 1.0
            assert segment.model == pipeline.model and segment.model != "lite"


def test_thresholds_and_max_masks(pipeline: Pipeline) -> None:
    image = random_image(2)
    nothing = pipeline.run(image, ["shoe"], JobOptions(box_threshold=1.0, text_threshold=1.0))
    assert nothing[0].segments == []  # nothing above threshold: no_match, never an invented mask
    one = pipeline.run(image, ["shoe"], JobOptions(box_threshold=0.0, text_threshold=0.0, max_masks=1))
    assert len(one[0].segments) == 1


@pytest.mark.parametrize("name", MODEL_PIPELINES)
def test_prompts_share_one_detector_and_one_image_encoder_run(
    name: str, model_settings: Settings, tiny_model_dir: Path
) -> None:
    pipeline = fresh(name, model_settings, tiny_model_dir)
    before = pipeline.counters()
    pipeline.run(random_image(3), ["shoe", "mug handle", "left cat", "largest dog"], EVERYTHING)
    after = pipeline.counters()
    assert after["image_encoder_runs"] - before["image_encoder_runs"] == 1
    if name != "sam3":  # SAM 3 has no separate detector
        assert after["detector_runs"] - before["detector_runs"] == 1
    # The same job again: nothing runs (embedding and detections are cached).
    pipeline.run(random_image(3), ["shoe", "mug handle", "left cat", "largest dog"], EVERYTHING)
    assert pipeline.counters() == after
    # Another prompt on the same pixels: the detector runs, the image encoder does not.
    pipeline.run(random_image(3), ["red cup"], EVERYTHING)
    assert pipeline.counters()["image_encoder_runs"] == after["image_encoder_runs"]
    if name != "sam3":
        assert pipeline.counters()["detector_runs"] == after["detector_runs"] + 1
    # New pixels: the encoder runs once more.
    pipeline.run(random_image(4), ["shoe"], EVERYTHING)
    assert pipeline.counters()["image_encoder_runs"] == after["image_encoder_runs"] + 1


class ScriptedDinoModel:
    """Stands in for GroundingDINO's forward pass: query q scores high on the tokens of phrase script[q]."""

    def __init__(
        self, real: Any, script: list[int], boxes: list[list[float]], spans: list[list[int]]
    ) -> None:
        self.config = real.config
        self.script, self.boxes, self.spans = script, boxes, spans

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        queries, tokens = 6, self.config.max_text_len
        logits = torch.full((1, queries, tokens), -10.0)
        for query, phrase in enumerate(self.script):
            logits[0, query, self.spans[phrase]] = 5.0
        boxes = torch.full((1, queries, 4), 0.05)
        boxes[0, : len(self.boxes)] = torch.tensor(self.boxes)
        return SimpleNamespace(logits=logits, pred_boxes=boxes)


def test_grounding_dino_maps_each_box_back_to_its_prompt(
    model_settings: Settings, tiny_model_dir: Path
) -> None:
    pipeline = fresh("grounded-sam", model_settings, tiny_model_dir)
    detector: Any = pipeline.detector
    phrases = ["red shoe", "mug handle", "cat"]
    encoded = detector.processor.tokenizer(caption_of(phrases), return_offsets_mapping=True)
    from smartseg.worker.models.grounding_dino import phrase_token_spans

    spans = phrase_token_spans([tuple(pair) for pair in encoded["offset_mapping"]], phrases)
    assert all(spans), spans
    # cx, cy, w, h: query 0 -> "cat" on the right, 1 -> "red shoe" on the left, 2 -> "mug handle" top.
    boxes = [[0.8, 0.5, 0.2, 0.2], [0.2, 0.5, 0.2, 0.2], [0.5, 0.15, 0.2, 0.2]]
    detector.model = ScriptedDinoModel(detector.model, [2, 0, 1], boxes, spans)
    found = detector.detect(random_image(5, 100, 200), phrases, JobOptions())
    assert [[tuple(round(v) for v in c.box) for c in group] for group in found] == [
        [(20, 40, 60, 60)],
        [(80, 5, 120, 25)],
        [(140, 40, 180, 60)],
    ]
    # Scores are sigmoid(5) = 0.993 on the assigned phrase: thresholds above that keep nothing.
    image = random_image(5, 100, 200)
    assert detector.detect(image, phrases, JobOptions(text_threshold=0.995)) == [[], [], []]
    assert detector.detect(image, phrases, JobOptions(box_threshold=0.995)) == [[], [], []]


class KnownBoxes:
    def __init__(self, boxes: list[tuple[float, float, float, float]]) -> None:
        self.boxes = boxes

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        return [
            [Candidate(phrase, 0.9 - 0.1 * i, box) for i, box in enumerate(self.boxes)] for phrase in phrases
        ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("left shoe", 1), ("right shoe", 2), ("second from left shoe", 0), ("largest shoe", 2), ("shoe", 0)],
)
def test_selector_keeps_the_candidate_a_qualifier_names(
    prompt: str, expected: int, model_settings: Settings, tiny_model_dir: Path
) -> None:
    pipeline = fresh("grounded-sam", model_settings, tiny_model_dir)
    boxes = [(50.0, 10.0, 70.0, 30.0), (5.0, 40.0, 25.0, 60.0), (80.0, 20.0, 120.0, 80.0)]
    pipeline.detector = KnownBoxes(boxes)
    [result] = pipeline.run(random_image(6), [prompt], JobOptions(max_masks=1))
    [segment] = result.segments
    assert segment.score == pytest.approx(0.9 - 0.1 * expected)


def test_a_corrupt_weights_file_is_named(
    model_settings: Settings, tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "models"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "sam-vit-base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=re.escape(str(weights))):
        fresh("grounded-sam", model_settings.updated(model_dir=str(broken)), broken)
    # Without a manifest to check against, the loader still names the file it could not read.
    (broken / "sam-vit-base" / "manifest.json").unlink()
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=re.escape(str(weights))):
        fresh("grounded-sam", model_settings.updated(model_dir=str(broken)), broken)


def test_sam3_decodes_phrases_in_batches_as_it_would_one_by_one(
    model_settings: Settings, tiny_model_dir: Path
) -> None:
    pipeline = fresh("sam3", model_settings, tiny_model_dir)
    phrases = ["shoe", "mug handle", "cat", "dog", "red cup"]  # more than one batch
    image = random_image(7)
    together = pipeline.run(image, phrases, EVERYTHING)
    for phrase, result in zip(phrases, together, strict=True):
        [alone] = pipeline.run(image, [phrase], EVERYTHING)
        assert [round(s.score, 4) for s in alone.segments] == [round(s.score, 4) for s in result.segments]
        for one, other in zip(alone.segments, result.segments, strict=True):
            assert (one.mask == other.mask).mean() > 0.999


def test_sam3_position_encodings_depend_on_the_input_size_only(
    model_settings: Settings, tiny_model_dir: Path
) -> None:
    """Why one copy of them can serve every cached image."""
    detector: Any = fresh("sam3", model_settings, tiny_model_dir).detector
    with torch.inference_mode():
        first, second = (
            detector.model.get_vision_features(
                pixel_values=detector.image_processor.pixel_values(random_image(s))
            )
            for s in (8, 9)
        )
    assert not torch.equal(first.fpn_hidden_states[0], second.fpn_hidden_states[0])
    for one, other in zip(first.fpn_position_encoding, second.fpn_position_encoding, strict=True):
        assert torch.equal(one, other)


class CountingCalls:
    """Wraps a model method: how many times it ran, and on how many images each time."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.batch_sizes: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        self.batch_sizes.append(int(pixels.shape[0]))
        return self.method(*args, **kwargs)


def same_results(batched: Sequence[Any], alone: Sequence[Any]) -> None:
    assert [r.prompt for r in batched] == [r.prompt for r in alone]
    for one, other in zip(batched, alone, strict=True):
        assert len(one.segments) == len(other.segments), one.prompt
        for a, b in zip(one.segments, other.segments, strict=True):
            assert a.label == b.label and abs(a.score - b.score) < 1e-4
            overlap = np.logical_and(a.mask, b.mask).sum() / max(np.logical_or(a.mask, b.mask).sum(), 1)
            assert overlap >= 0.99, (one.prompt, overlap)  # float tolerance may flip an edge pixel


@pytest.mark.parametrize("name", [*MODEL_PIPELINES, "lite"])
def test_jobs_run_together_each_get_their_results_alone(
    name: str, model_settings: Settings, tiny_model_dir: Path
) -> None:
    """Mixed image sizes and prompts, one image twice: one batched encoder pass for the distinct images,
    the detector batched where input size and caption length agree, and every job's results as alone."""
    jobs = [
        ImageJob(random_image(10, 70, 110), ["shoe", "left cat"], EVERYTHING),
        ImageJob(random_image(11, 96, 128), ["mug handle"], EVERYTHING),
        ImageJob(random_image(12, 70, 110), ["shoe", "left cat"], EVERYTHING),
        ImageJob(random_image(10, 70, 110), ["red cup"], JobOptions(max_masks=1, box_threshold=0.0)),
    ]
    alone = [
        fresh(name, model_settings, tiny_model_dir).run(job.image, job.prompts, job.options) for job in jobs
    ]
    pipeline = fresh(name, model_settings, tiny_model_dir)
    encoder: CountingCalls | None = None
    detector: CountingCalls | None = None
    if name in ("grounded-sam", "grounded-sam2"):
        encoder = pipeline.segmenter.model.get_image_embeddings = CountingCalls(  # type: ignore[attr-defined]
            pipeline.segmenter.model.get_image_embeddings  # type: ignore[attr-defined]
        )
        detector = pipeline.detector.model = CountingCalls(pipeline.detector.model)  # type: ignore[attr-defined]
    elif name == "sam3":
        encoder = pipeline.detector.model.get_vision_features = CountingCalls(  # type: ignore[attr-defined]
            pipeline.detector.model.get_vision_features  # type: ignore[attr-defined]
        )
    runs = pipeline.run_many(jobs)
    for run, results in zip(runs, alone, strict=True):
        same_results(run.results, results)
    if name == "lite":
        return
    assert encoder is not None and encoder.batch_sizes == [3]  # three distinct images, one pass
    # Each image's encoder pass is counted for the first job that showed it; the repeat costs none.
    assert [run.counters["image_encoder_runs"] for run in runs] == [1, 1, 1, 0]
    if detector is not None:
        # Jobs 1 and 3 share an input size and a caption: one pass of two. Four captions, three passes.
        assert sorted(detector.batch_sizes) == [1, 1, 2]
        assert [run.counters["detector_runs"] for run in runs] == [1, 1, 1, 1]
