"""The lite pipeline end to end on generated scenes, plus the pipeline skeleton and registry it runs in."""

import io
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from smartseg.shared.errors import UnknownPipeline
from smartseg.shared.jobspec import JobOptions
from smartseg.testing.scenes import COLORS, Scene, demo_scene, generate_scene, scene_prompts
from smartseg.worker.pipeline import lite as lite_module
from smartseg.worker.pipeline.base import Candidate, Pipeline
from smartseg.worker.pipeline.lite import (
    COLOR_NAMES,
    MAX_REGIONS,
    RELATED_KIND_SCORE,
    LiteDetector,
    LiteSegmenter,
    Region,
    build_lite_pipeline,
    find_regions,
    name_color,
)
from smartseg.worker.pipelines import PIPELINE_NAMES, build_pipeline

SCENE_COUNT = 30
MIN_MEAN_IOU = 0.9
MIN_MEAN_IOU_JPEG = 0.85
JPEG_QUALITY = 85


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(seed) for seed in range(SCENE_COUNT)]


@pytest.fixture(scope="module")
def lite() -> Pipeline:
    return build_pipeline("lite")


def jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def union(masks: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for mask in masks:
        out |= mask
    return out


def measure(lite: Pipeline, scenes: list[Scene], images: list[Image.Image]) -> tuple[float, list[str]]:
    """Mean IoU over cases with an expected mask, and the cases that wrongly returned something."""
    ious, false_matches = [], []
    for scene, image in zip(scenes, images, strict=True):
        cases = scene_prompts(scene)
        pixels = np.asarray(image)
        results = lite.run(pixels, [c.prompt for c in cases], JobOptions())
        for case, result in zip(cases, results, strict=True):
            got = union([s.mask for s in result.segments], pixels.shape[:2])
            if case.expected is None:
                if result.segments:
                    false_matches.append(f"{case.prompt!r} -> {[s.label for s in result.segments]}")
            else:
                ious.append(np.count_nonzero(got & case.expected) / np.count_nonzero(got | case.expected))
    return float(np.mean(ious)), false_matches


def test_accuracy_on_generated_scenes(lite: Pipeline, scenes: list[Scene]) -> None:
    mean_iou, false_matches = measure(lite, scenes, [s.image for s in scenes])
    print(f"lite mean IoU over {SCENE_COUNT} scenes: {mean_iou:.4f}")
    assert mean_iou >= MIN_MEAN_IOU
    assert false_matches == []


def test_accuracy_on_jpeg_scenes(lite: Pipeline, scenes: list[Scene]) -> None:
    mean_iou, false_matches = measure(lite, scenes, [jpeg(s.image) for s in scenes])
    print(f"lite mean IoU over {SCENE_COUNT} JPEG (q{JPEG_QUALITY}) scenes: {mean_iou:.4f}")
    assert mean_iou >= MIN_MEAN_IOU_JPEG
    assert false_matches == []


def test_scene_prompts_cover_every_kind_of_case(scenes: list[Scene]) -> None:
    categories = {case.category for scene in scenes for case in scene_prompts(scene)}
    assert categories == {
        "color",
        "kind",
        "color+kind",
        "position",
        "size",
        "ordinal",
        "ordinal-out-of-range",
        "absent",
        "unknown",
    }


def test_scenes_are_deterministic_and_well_formed() -> None:
    first, again = generate_scene(7), generate_scene(7)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert first.image.size == (320, 240) and first.image.mode == "RGB"
    assert 3 <= len(first.shapes) <= 6
    assert len({(s.color, s.kind) for s in first.shapes}) == len(first.shapes)
    assert np.count_nonzero(np.sum([s.mask for s in first.shapes], axis=0) > 1) == 0  # no overlaps


def test_demo_scene(lite: Pipeline) -> None:
    scene = demo_scene()
    assert scene.image.size == (480, 320)
    kinds = [s.kind for s in scene.shapes]
    assert [k for k in set(kinds) if kinds.count(k) > 1] == [
        "circle"
    ]  # the demo prompts "left <repeated kind>"
    circles = sorted((s for s in scene.shapes if s.kind == "circle"), key=lambda s: s.center[0])
    [result] = lite.run(np.asarray(scene.image), ["left circle"], JobOptions())
    [segment] = result.segments
    assert segment.label == f"{circles[0].color} circle"


def test_registry() -> None:
    assert PIPELINE_NAMES == ("lite", "grounded-sam", "grounded-sam2", "sam3")
    pipeline = build_pipeline("lite")
    assert (pipeline.name, pipeline.model) == ("lite", "lite")
    with pytest.raises(UnknownPipeline, match=r"unknown pipeline 'nope'"):
        build_pipeline("nope")
    with pytest.raises(UnknownPipeline, match="needs its models' folders and a runtime"):
        build_pipeline("grounded-sam")


def test_outputs_are_image_sized_bool_masks_in_prompt_order(lite: Pipeline) -> None:
    scene = demo_scene()
    pixels = np.asarray(scene.image)
    prompts = ["shoe", "circle", "left circle", "shoe", "grey thing", "largest shape"]
    results = lite.run(pixels, prompts, JobOptions())
    assert [r.prompt for r in results] == prompts
    assert [len(r.segments) for r in results] == [0, 3, 1, 0, 0, 1]
    for result in results:
        for segment in result.segments:
            assert segment.model == "lite"
            assert segment.prompt == result.prompt
            assert segment.mask.dtype == bool and segment.mask.shape == pixels.shape[:2]
            x0, y0, x1, y1 = segment.box
            assert segment.mask[y0:y1, x0:x1].sum() == segment.area > 0
            assert 0 < segment.score <= 1


def test_thresholds_and_max_masks(lite: Pipeline) -> None:
    pixels = np.asarray(demo_scene().image)

    def labels(prompt: str, options: JobOptions) -> list[str]:
        [result] = lite.run(pixels, [prompt], options)
        return [s.label for s in result.segments]

    # "rectangle" is a bar fully and a square partly
    assert labels("rectangle", JobOptions()) == ["yellow bar", "blue square"]
    assert labels("rectangle", JobOptions(text_threshold=RELATED_KIND_SCORE + 0.01)) == ["yellow bar"]
    assert labels("circle", JobOptions(max_masks=2)) == ["red circle", "purple circle"]  # largest first
    assert labels("shape", JobOptions.model_construct(box_threshold=1.01)) == []


@pytest.mark.parametrize("color", [c for c in COLOR_NAMES if c != "white"])  # white never drawn
def test_scene_palette_is_named_as_drawn(color: str) -> None:
    assert name_color(COLORS[color]) == color


def test_synonyms_and_unknown_words(lite: Pipeline) -> None:
    pixels = np.asarray(demo_scene().image)
    prompts = ["violet disc", "purple circles", "the dark purple round thing", "purple cat", "purple and red"]
    counts = [len(r.segments) for r in lite.run(pixels, prompts, JobOptions())]
    assert counts == [1, 1, 1, 0, 0]


def test_segmenter_fills_a_box_only_candidate_from_the_region_inside() -> None:
    scene = demo_scene()
    pixels = np.asarray(scene.image)
    square = next(s for s in scene.shapes if s.color == "blue")
    x0, y0, x1, y1 = square.box
    inside = Candidate("from another detector", 0.9, (x0 - 5.5, y0 - 5.5, x1 + 5.5, y1 + 5.5))
    empty = Candidate("nothing here", 0.9, (0, 0, 30, 30))
    got_inside, got_empty = LiteSegmenter().segment(pixels, [inside, empty])
    assert got_inside.mask is not None and got_empty.mask is not None
    iou = np.count_nonzero(got_inside.mask & square.mask) / np.count_nonzero(got_inside.mask | square.mask)
    assert iou > 0.95
    assert not got_empty.mask.any()


def test_segmenter_fills_holes_in_candidate_masks() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:25, 5:25] = True
    mask[10:20, 10:20] = False  # a ring: its hole is filled
    mask[5:25, 35:55] = True
    mask[10:20, 40:55] = False  # a "C": its gap reaches the outside, so it is no hole
    mask[30:, :10] = True
    mask[33:37, 3:6] = False  # a hole in a shape on the image's edge
    given = mask.copy()
    candidate = Candidate("from another detector", 0.9, (0, 0, 60, 40), mask)
    [got] = LiteSegmenter().segment(np.zeros((40, 60, 3), np.uint8), [candidate])
    expected = mask.copy()
    expected[10:20, 10:20] = expected[33:37, 3:6] = True
    assert got.mask is not None and np.array_equal(got.mask, expected)
    assert np.array_equal(mask, given)  # the candidate's own mask is left alone


def test_detector_finds_nothing_on_a_blank_image() -> None:
    blank = np.full((60, 80, 3), 240, dtype=np.uint8)
    assert LiteDetector().detect(blank, ["shape", "red circle"], JobOptions()) == [[], []]


def test_work_is_bounded_on_a_busy_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # What keeps lite fast, counted instead of timed: one region search per image, however many
    # prompts, and at most MAX_REGIONS regions however busy the image.
    busy = np.full((480, 640, 3), 240, dtype=np.uint8)
    for row in range(0, 480, 16):
        for col in range(0, 640, 16):
            busy[row + 2 : row + 14, col + 2 : col + 14] = (200, 30, 30)  # 1,200 small squares
    searches: list[int] = []

    def counted(image: np.ndarray) -> list[Region]:
        regions = find_regions(image)
        searches.append(len(regions))
        return regions

    monkeypatch.setattr(lite_module, "find_regions", counted)
    prompts = [c.prompt for c in scene_prompts(generate_scene(1, width=640, height=480))]
    results = build_lite_pipeline().run(busy, prompts, JobOptions())
    assert len(prompts) > 5 and len(results) == len(prompts)
    assert searches == [MAX_REGIONS]


def test_run_rejects_non_rgb_arrays(lite: Pipeline) -> None:
    with pytest.raises(ValueError, match="RGB"):
        lite.run(np.zeros((10, 10), dtype=np.uint8), ["shape"], JobOptions())


class FakeDetector:
    """Returns a fixed candidate per phrase and records the calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        self.calls.append(list(phrases))
        return [
            [Candidate(f"{phrase} {x}", 0.5 + x / 1000, (x, 0.0, x + 10.0, 10.0)) for x in (50.0, 10.0, 90.0)]
            for phrase in phrases
        ]


class FakeSegmenter:
    """Masks each box, except that a box starting at x=90 yields an empty mask."""

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        self.calls += 1
        for candidate in candidates:
            x0, y0, x1, y1 = (int(v) for v in candidate.box)
            candidate.mask = np.zeros(image.shape[:2], dtype=bool)
            if x0 != 90:
                candidate.mask[y0:y1, x0:x1] = True
        return candidates


def test_pipeline_detects_and_segments_once_and_applies_qualifiers() -> None:
    detector, segmenter = FakeDetector(), FakeSegmenter()
    pipeline = Pipeline("fake", "fake-model", detector, segmenter)
    prompts = ["cat", "left cat", "the rightmost cat", "dog"]
    results = pipeline.run(np.zeros((20, 120, 3), dtype=np.uint8), prompts, JobOptions(max_masks=2))
    assert detector.calls == [["cat", "dog"]]
    assert segmenter.calls == 1
    assert [r.prompt for r in results] == prompts
    # "cat": best two scores are x=90 (empty mask, dropped) and x=50
    assert [[s.label for s in r.segments] for r in results] == [["cat 50.0"], ["cat 10.0"], [], ["dog 50.0"]]
    [segment] = results[1].segments
    assert (segment.box, segment.area, segment.model) == ((10, 0, 20, 10), 100, "fake-model")
