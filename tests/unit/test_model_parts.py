"""Model-independent parts of the model pipelines: the embedding LRU, box NMS, caption token spans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smartseg.shared.errors import RuntimeConfigError
from smartseg.worker.models.grounding_dino import caption_of, non_max_suppression, phrase_token_spans
from smartseg.worker.models.image_cache import ImageCache, image_key
from smartseg.worker.models.runtime import Runtime
from smartseg.worker.models.square_image import SquareImageProcessor, upscale_logits


def test_image_key_depends_on_pixels_and_shape() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    assert image_key(image) == image_key(image.copy())
    changed = image.copy()
    changed[0, 0, 0] = 1
    assert image_key(changed) != image_key(image)
    assert image_key(image.reshape(6, 4, 3)) != image_key(image)


def test_embedding_cache_evicts_the_least_recently_used() -> None:
    cache = ImageCache(capacity=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, 1, 3)
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)


def test_embedding_cache_of_size_zero_keeps_nothing() -> None:
    cache = ImageCache(capacity=0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_nms_keeps_the_best_of_overlapping_boxes_and_separate_ones() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.5, 0.9, 0.4, 0.3])
    assert non_max_suppression(boxes, scores, 0.5) == [1, 2]


def test_nms_matches_the_textbook_loop_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 40, (300, 2))], axis=1)
    scores = rng.uniform(0, 1, 300)

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    expected: list[int] = []
    for index in sorted(range(300), key=lambda i: -scores[i]):
        if all(iou(boxes[index], boxes[other]) <= 0.5 for other in expected):
            expected.append(index)
    assert non_max_suppression(boxes, scores, 0.5) == expected


@pytest.mark.parametrize("phrases", [["red shoe", "mug handle"], ["Cat"], ["a", "b c", "d"]])
def test_phrase_spans_cover_each_phrase_and_nothing_else(phrases: list[str]) -> None:
    caption = caption_of(phrases)
    # A whitespace "tokenizer" with character offsets, plus special tokens with empty offsets.
    offsets = [(0, 0)]
    position = 0
    for word in caption.replace(".", " . ").split():
        start = caption.index(word, position)
        offsets.append((start, start + len(word)))
        position = start + len(word)
    offsets.append((0, 0))
    spans = phrase_token_spans(offsets, phrases)
    for phrase, span in zip(phrases, spans, strict=True):
        assert " ".join(caption[offsets[t][0] : offsets[t][1]] for t in span) == phrase.lower()


def test_square_image_processor_reads_the_saved_config_or_the_published_defaults(tmp_path: Path) -> None:
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "processor_config.json").write_text(
        json.dumps({"image_processor": {"size": {"height": 8, "width": 6}, "image_mean": [0.5] * 3}})
    )
    processor = SquareImageProcessor.from_folder(nested, 1024, (0.1, 0.2, 0.3), (0.25, 0.25, 0.25))
    assert (processor.height, processor.width, processor.mean, processor.std) == (
        8,
        6,
        (0.5,) * 3,
        (0.25,) * 3,
    )
    pixels = processor.pixel_values(np.full((30, 40, 3), 255, dtype=np.uint8))
    assert pixels.shape == (1, 3, 8, 6)
    assert torch.allclose(pixels, torch.full_like(pixels, (1.0 - 0.5) / 0.25))

    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 4, "width": 4}}))
    assert SquareImageProcessor.from_folder(flat, 1024, (0.0,) * 3, (1.0,) * 3).height == 4
    assert SquareImageProcessor.from_folder(tmp_path, 1008, (0.0,) * 3, (1.0,) * 3).width == 1008

    (flat / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 4}}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json"):
        SquareImageProcessor.from_folder(flat, 1024, (0.0,) * 3, (1.0,) * 3)


def test_upscaled_logits_keep_their_sign_regions() -> None:
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0
    mask = upscale_logits(logits, (40, 40))[0] > 0
    assert mask[:15, :15].all() and not mask[25:, :].any() and not mask[:, 25:].any()


def test_runtime_refuses_what_this_machine_cannot_do() -> None:
    cpu = Runtime.choose(device="cpu")
    assert (cpu.device.type, cpu.dtype) == ("cpu", torch.float32)
    if not torch.cuda.is_available():
        assert Runtime.choose().device.type == "cpu"  # auto falls back to the CPU
        with pytest.raises(RuntimeConfigError, match="no CUDA device"):
            Runtime.choose(device="cuda")
    with pytest.raises(RuntimeConfigError, match="needs CUDA"):
        Runtime.choose(device="cpu", dtype="float16")


def test_model_code_imports_neither_celery_nor_boto3() -> None:
    code = (
        "import sys, smartseg.worker.models.pipelines, smartseg.testing.random_weights\n"
        "print(sorted(m for m in ('celery', 'boto3', 'botocore', 'kombu') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
