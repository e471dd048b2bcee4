"""bench/quality.py: the figures on hand-made masks, lite on a generated set, a wrong pipeline scoring low,
the worker's decode-and-scale path, the command line and the RefCOCO converter."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import quality
from bench.quality import Sample, evaluate, figures, load_set, predict, score, summarise
from smartseg.shared.jobspec import JobOptions
from smartseg.shared.mask_encoding import encode_rle
from smartseg.testing.referring_set import ANNOTATIONS, write_referring_set
from smartseg.worker.image import decode_image
from smartseg.worker.pipeline.base import PromptResult, Segment, mask_box
from smartseg.worker.pipelines import build_pipeline

TOP_MASK = JobOptions(max_masks=1)


def block(rows: slice, cols: slice, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


class Answers:
    """A stand-in pipeline: ``masks(image)`` is its answer for every prompt (no masks: no_match)."""

    def __init__(self, masks: Callable[[np.ndarray], list[np.ndarray]]) -> None:
        self.masks = masks

    def run(self, image: np.ndarray, prompts: Sequence[str], options: JobOptions) -> list[PromptResult]:
        made = self.masks(image)
        return [
            PromptResult(prompt, [Segment(prompt, "fake", 1.0, mask_box(m), m, "fake") for m in made])
            for prompt in prompts
        ]


WHOLE_IMAGE = Answers(lambda image: [np.ones(image.shape[:2], dtype=bool)])
NOTHING = Answers(lambda image: [])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return load_set(write_referring_set(tmp_path_factory.mktemp("referring"), 20, seed=1))


def test_figures_on_hand_made_masks() -> None:
    truth = block(slice(0, 4), slice(0, 4))  # 16 px
    outcomes = [
        score(truth.copy(), truth),  # IoU 1: 16 / 16
        score(block(slice(0, 4), slice(0, 2)), truth),  # 8 / 16 = 0.5, which counts as a hit
        score(block(slice(0, 4), slice(2, 6)), truth),  # 8 / 24
        score(None, block(slice(5, 7), slice(0, 4))),  # no_match on a present target: 0 / 8
        score(None, None),  # no_match on an absent target: right
        score(block(slice(0, 1), slice(0, 1)), None),  # a mask invented for an absent target
    ]
    assert [o.iou for o in outcomes[:4]] == [1.0, 0.5, 8 / 24, 0.0]
    assert figures(outcomes) == {
        "samples": 6,
        "present": 4,
        "absent": 2,
        "miou": (1.0 + 0.5 + 8 / 24 + 0.0) / 4,
        "ciou": (16 + 8 + 8 + 0) / (16 + 16 + 24 + 8),  # 0.5
        "acc_at_0_5": 2 / 4,
        "no_match_answers": 2,
        "missed_present": 1,
        "no_match_precision": 1 / 2,  # one of the two no_match answers was on a present target
        "no_match_recall": 1 / 2,  # the invented mask
    }


def test_undefined_figures_are_none_and_categories_are_split() -> None:
    only_absent = [score(None, None, "absent"), score(block(slice(0, 2), slice(0, 2)), None, "absent")]
    found = summarise([*only_absent, score(block(slice(0, 2), slice(0, 2)), block(slice(0, 2), slice(0, 4)))])
    assert found["categories"] == {"absent": {"samples": 2, "no_match_recall": 0.5}}
    assert figures(only_absent)["miou"] is None and figures(only_absent)["ciou"] is None
    assert figures([score(block(slice(0, 2), slice(0, 2)), None)])["no_match_precision"] is None
    with pytest.raises(ValueError, match="predicted mask"):
        score(np.ones((4, 4), dtype=bool), block(slice(0, 2), slice(0, 2)))


def test_lite_scores_high_on_a_generated_set(generated: list[Sample]) -> None:
    found = summarise(evaluate(build_pipeline("lite"), generated, TOP_MASK))
    assert found["present"] >= 200 and found["absent"] >= 60
    assert found["miou"] >= 0.9 and found["ciou"] >= 0.9 and found["acc_at_0_5"] >= 0.95
    assert found["no_match_precision"] == 1.0 and found["no_match_recall"] >= 0.95
    assert {"position", "size", "ordinal", "color+kind", "absent"} <= found["categories"].keys()


def test_a_wrong_pipeline_scores_low(generated: list[Sample]) -> None:
    whole = figures(evaluate(WHOLE_IMAGE, generated, TOP_MASK))
    assert whole["miou"] < 0.2 and whole["ciou"] < 0.2 and whole["acc_at_0_5"] == 0.0
    assert whole["no_match_recall"] == 0.0 and whole["no_match_precision"] is None
    silent = figures(evaluate(NOTHING, generated, TOP_MASK))
    assert silent["miou"] == 0.0 and silent["no_match_recall"] == 1.0
    assert silent["no_match_precision"] == silent["absent"] / silent["samples"] < 0.5


def test_the_answer_is_the_union_of_the_masks_at_the_image_size(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    Image.new("RGB", (128, 96), (240, 240, 240)).save(path)
    image = decode_image(path.read_bytes(), max_side=64)  # the worker's working size: 64x48
    halves = Answers(
        lambda pixels: [
            block(slice(0, 24), slice(0, 32), (48, 64)),
            block(slice(0, 24), slice(32, 64), (48, 64)),
        ]
    )
    mask = predict(halves, image, "anything", JobOptions(max_masks=2))
    assert mask is not None and mask.shape == (96, 128)
    assert np.array_equal(mask, block(slice(0, 48), slice(0, 128), (96, 128)))
    assert predict(NOTHING, image, "anything", TOP_MASK) is None


def test_set_files_are_checked(tmp_path: Path) -> None:
    Image.new("RGB", (8, 6)).save(tmp_path / "image.png")
    Image.new("L", (8, 6)).save(tmp_path / "empty.png")
    Image.new("L", (6, 8), 255).save(tmp_path / "turned.png")
    for mask, error in (("empty.png", "empty truth mask"), ("turned.png", "one channel of 8x6")):
        line = {"image": "image.png", "expression": "x", "mask": mask}
        (tmp_path / ANNOTATIONS).write_text(json.dumps(line) + "\n")
        with pytest.raises(ValueError, match=error):
            evaluate(NOTHING, load_set(tmp_path), TOP_MASK)
    (tmp_path / ANNOTATIONS).write_text('{"image": "image.png", "mask": null}\n')
    with pytest.raises(ValueError, match=":1: needs strings"):
        load_set(tmp_path)


def test_the_command_line_generates_scores_and_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "quality.json"
    argv = [
        "quality.py",
        "--pipeline",
        "lite",
        "--generate",
        "2",
        "--set",
        str(tmp_path / "set"),
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    quality.main()
    report = json.loads(out.read_text())
    assert (report["pipeline"], report["model"], report["options"]["max_masks"]) == ("lite", "lite", 1)
    assert report["samples"] == len(load_set(tmp_path / "set")) > 0 and report["miou"] >= 0.9
    assert report["command"].startswith("python bench/quality.py --pipeline lite --generate 2")


def test_convert_refcoco(tmp_path: Path) -> None:
    images = tmp_path / "train2014"
    images.mkdir()
    for image_id in (1, 2):
        Image.new("RGB", (40, 30)).save(images / f"COCO_train2014_{image_id:012d}.jpg")
    polygon = [[10.0, 5.0, 20.0, 5.0, 20.0, 15.0, 10.0, 15.0]]  # pixels 10..19 x 5..14
    rle_mask = block(slice(20, 25), slice(0, 8), (30, 40))
    instances = {
        "images": [
            {"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": 30, "width": 40} for i in (1, 2)
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": polygon},
            {"id": 22, "image_id": 2, "category_id": 2, "segmentation": encode_rle(rle_mask)},
        ],
        "categories": [{"id": 1, "name": "zebra"}, {"id": 2, "name": "cup"}],
    }
    refs = [
        {
            "image_id": 1,
            "ann_id": 11,
            "category_id": 1,
            "split": "val",
            "sentences": [{"sent": "the zebra"}, {"sent": "left one"}],
        },
        {
            "image_id": 2,
            "ann_id": 22,
            "category_id": 2,
            "split": "val",
            "sentences": [{"sent": "white cups"}],
        },
        {
            "image_id": 2,
            "ann_id": 22,
            "category_id": 2,
            "split": "train",
            "sentences": [{"sent": "not in val"}],
        },
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "refs.p").write_bytes(pickle.dumps(refs, protocol=2))
    counts = quality.convert_refcoco(
        tmp_path / "refs.p", tmp_path / "instances.json", images, tmp_path / "set"
    )
    assert counts == {"present": 3, "absent": 2, "images": 2}
    samples = load_set(tmp_path / "set")
    assert [(s.expression, s.mask is None) for s in samples] == [
        ("the zebra", False),
        ("left one", False),
        ("white cups", True),  # image 1 has no cup
        ("white cups", False),
        ("the zebra", True),  # image 2 has no zebra
    ]
    assert samples[2].image == (images / "COCO_train2014_000000000001.jpg").resolve()
    assert samples[0].mask is not None and samples[3].mask is not None
    assert np.array_equal(
        np.asarray(Image.open(samples[0].mask)), block(slice(5, 15), slice(10, 20), (30, 40))
    )
    assert np.array_equal(np.asarray(Image.open(samples[3].mask)), rle_mask)
