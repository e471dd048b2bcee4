"""The shipped sample images: lite must segment every listed prompt on the committed JPEGs, and the files,
their index and the renderer must agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartseg.shared.jobspec import JobOptions
from smartseg.testing.sample_images import (
    SAMPLE_NAMES,
    render_sample,
    sample_prompts,
    sample_truth,
    write_samples,
)
from smartseg.worker.pipeline.base import Pipeline
from smartseg.worker.pipeline.lite import find_regions
from smartseg.worker.pipelines import build_pipeline

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "api/static/samples"
MIN_IOU = 0.9
MAX_FILE_BYTES = 80 * 1024
MAX_SIZE = (640, 480)
# JPEG keeps each 8x8 block's mean colour to within a few levels (about 4.5 here); an object moved by even
# 2 px changes some block's mean by tens.
BLOCK = 8
MAX_BLOCK_MEAN_ERROR = 10.0


@pytest.fixture(scope="module")
def lite() -> Pipeline:
    return build_pipeline("lite")


def committed(name: str) -> np.ndarray:
    with Image.open(SAMPLES_DIR / f"{name}.jpg") as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_lite_answers_every_listed_prompt_on_the_committed_jpeg(lite: Pipeline, name: str) -> None:
    pixels = committed(name)
    cases = sample_prompts(name)
    results = lite.run(pixels, [c.prompt for c in cases], JobOptions())
    wrong = []
    for case, result in zip(cases, results, strict=True):
        got = np.zeros(pixels.shape[:2], dtype=bool)
        for segment in result.segments:
            got |= segment.mask
        if case.expected is None:
            if result.segments:
                wrong.append(f"{case.prompt!r}: expected no_match, got {[s.label for s in result.segments]}")
        elif (score := iou(got, case.expected)) < MIN_IOU:
            wrong.append(f"{case.prompt!r}: IoU {score:.3f} ({[s.label for s in result.segments]})")
    assert wrong == []


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_lite_sees_each_object_as_one_region_named_as_declared(name: str) -> None:
    # No shadow, backdrop texture or highlight makes a region of its own or splits an object.
    regions = find_regions(committed(name))
    objects = render_sample(name).objects
    assert sorted((r.color, r.kind) for r in regions) == sorted((o.color, o.kind) for o in objects)
    for obj in objects:
        assert max(iou(r.mask, obj.mask) for r in regions) >= MIN_IOU, obj.name


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_are_small_varied_scenes_with_a_no_match_prompt(name: str) -> None:
    sample = render_sample(name)
    width, height = sample.image.size
    assert sample.image.mode == "RGB" and width <= MAX_SIZE[0] and height <= MAX_SIZE[1]
    count = len(sample.objects)
    assert 4 <= count <= 6
    assert len({o.name for o in sample.objects}) == len({o.color for o in sample.objects}) == count
    kinds = [o.kind for o in sample.objects]
    assert len(set(kinds)) < len(kinds)  # a repeated kind, so a positional prompt means something
    for obj in sample.objects:
        assert obj.mask.dtype == bool and obj.mask.shape == (height, width) and obj.mask.any()
    assert np.sum([o.mask for o in sample.objects], axis=0).max() == 1  # objects never overlap
    cases = sample_prompts(name)
    assert cases[0].expected is not None  # the headline prompt selects something
    assert any(c.expected is None for c in cases)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_committed_jpeg_is_the_current_render(name: str) -> None:
    fresh = np.asarray(render_sample(name).image, dtype=np.float32)
    pixels = committed(name).astype(np.float32)
    assert pixels.shape == fresh.shape
    height, width, _ = pixels.shape
    rows, cols = height // BLOCK, width // BLOCK

    def block_means(image: np.ndarray) -> np.ndarray:
        return image[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK, 3).mean(axis=(1, 3))

    assert np.abs(block_means(pixels) - block_means(fresh)).max() < MAX_BLOCK_MEAN_ERROR


def test_index_describes_the_committed_files() -> None:
    index = json.loads((SAMPLES_DIR / "index.json").read_text())
    assert [entry["name"] for entry in index["samples"]] == list(SAMPLE_NAMES)
    assert {p.name for p in SAMPLES_DIR.glob("*.jpg")} == {f"{name}.jpg" for name in SAMPLE_NAMES}
    for entry in index["samples"]:
        path = SAMPLES_DIR / entry["file"]
        assert entry["file"] == f"{entry['name']}.jpg"
        assert path.stat().st_size <= MAX_FILE_BYTES
        with Image.open(path) as image:
            assert image.size == (entry["width"], entry["height"])
        assert entry["prompts"] == [c.prompt for c in sample_prompts(entry["name"])]
        assert entry["title"] and entry["licence"].startswith("CC0-1.0")
    assert "CC0-1.0" in (SAMPLES_DIR / "LICENSE.md").read_text()


def test_write_samples_regenerates_the_committed_index(tmp_path: Path) -> None:
    write_samples(tmp_path / "samples")
    written = tmp_path / "samples"
    assert (written / "index.json").read_text() == (SAMPLES_DIR / "index.json").read_text()
    for name in SAMPLE_NAMES:
        assert (written / f"{name}.jpg").stat().st_size <= MAX_FILE_BYTES


def test_sample_truth() -> None:
    first = sample_prompts("toys")[0]
    assert first.expected is not None
    truth = sample_truth("toys", first.prompt)
    assert truth is not None and np.array_equal(truth, first.expected)
    no_match = next(c.prompt for c in sample_prompts("toys") if c.expected is None)
    assert sample_truth("toys", no_match) is None
    with pytest.raises(KeyError):
        sample_truth("toys", "a prompt nobody listed")
    with pytest.raises(KeyError):
        render_sample("zoo")


def test_rendering_is_deterministic_and_masks_are_read_only() -> None:
    first, again = render_sample("fruit"), render_sample("fruit")
    assert first.image is not again.image  # each caller gets an image of its own
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    with pytest.raises(ValueError, match="read-only"):
        first.objects[0].mask[0, 0] = True
