"""Referring-segmentation quality of a pipeline: mIoU, cIoU, accuracy at IoU 0.5 and no_match precision
and recall, on a set on disk (RefCOCO-style) or a generated one.

The set: a folder holding ``annotations.jsonl``, one JSON object a line::

    {"image": "images/0001.png", "expression": "red circle", "mask": "masks/0001.png"}
    {"image": "images/0001.png", "expression": "green square", "mask": null}

``image`` is a JPEG, PNG or WebP file. ``mask`` is a single-channel PNG (1-bit, 8-bit or palette) of the
image's size, as the worker sees it (EXIF orientation applied), whose non-zero pixels are the target; null
when the target is absent from the image. Paths are relative to the folder; absolute ones are allowed. An
optional ``"category"`` string adds per-category figures. ``testing/referring_set.py`` writes such a set
(``--generate``); ``convert-refcoco`` writes one from RefCOCO.

Each sample runs as the worker runs a one-prompt job: the image's bytes through ``decode_image`` (at most
``SMARTSEG_DECODE_MAX_SIDE`` on the longest side), ``Pipeline.run(pixels, [expression],
JobOptions(max_masks=1, ...))``, each mask scaled back to the image's size. The prediction is the union of
the masks returned for the expression: with the default ``--max-masks 1`` the top mask, since a referring
expression has one referent; a larger ``--max-masks`` scores the union. No masks is a ``no_match`` answer.

- mIoU: the mean over present-target samples of IoU(prediction, truth); a no_match counts 0.
- cIoU: the sum of intersections over the sum of unions, over present-target samples (a no_match adds the
  target's area to the unions): large targets weigh more.
- acc@0.5: the share of present-target samples with IoU >= 0.5.
- no_match precision: of the samples answered no_match, the share whose target is absent; recall: of the
  absent-target samples, the share answered no_match. null where undefined (no such answers or samples).

Model pipelines load as a worker loads them (``load_pipelines``): the folders of the models the settings
name (``SMARTSEG_DETECTOR_MODEL``, ``SMARTSEG_SAM_MODEL``, ...) under ``--model-dir`` (default
``SMARTSEG_MODEL_DIR``), each checked against its manifest, on the runtime ``--device``/``--dtype`` choose,
then warmed up. Nothing is downloaded: ``SMARTSEG_MODEL_URI`` is ignored and the hub is offline.

    python bench/quality.py --pipeline lite --generate 50        # generated set, seed 0 (--seed)
    python bench/quality.py --pipeline grounded-sam --set data/refcoco-val --model-dir models --device cuda
    python bench/quality.py convert-refcoco --refs 'refcoco/refs(unc).p' --instances refcoco/instances.json \\
        --images coco/train2014 --split val --out data/refcoco-val

It prints the figures and saves them to ``bench/results/quality_<pipeline>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np
from PIL import ExifTags, Image

from smartseg.shared.errors import WorkerStartError
from smartseg.shared.jobspec import JobOptions
from smartseg.shared.mask_encoding import decode_rle, rasterize_polygons
from smartseg.shared.settings import DeviceSetting, DtypeSetting, Settings
from smartseg.testing.referring_set import ANNOTATIONS, write_referring_set
from smartseg.worker.image import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DecodedImage, decode_image
from smartseg.worker.pipeline.base import Pipeline, PromptResult
from smartseg.worker.pipelines import PIPELINE_NAMES

RESULTS = Path(__file__).resolve().parent / "results"
IOU_HIT = 0.5
ABSENT = "absent"  # the category convert-refcoco gives its absent-target samples


class Segments(Protocol):
    """What is scored: a pipeline, or anything that answers like one."""

    def run(self, image: np.ndarray, prompts: Sequence[str], options: JobOptions) -> list[PromptResult]: ...


@dataclass(frozen=True)
class Sample:
    image: Path
    expression: str
    mask: Path | None  # None: the target is absent from the image
    category: str = ""


@dataclass(frozen=True)
class Outcome:
    """One scored sample; intersection and union count pixels, for present targets only."""

    present: bool  # the target is in the image
    no_match: bool  # the answer was no_match
    intersection: int = 0
    union: int = 0
    category: str = ""

    @property
    def iou(self) -> float:
        return self.intersection / self.union if self.union else 0.0


def load_set(folder: Path) -> list[Sample]:
    samples = []
    path = folder / ANNOTATIONS
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        image, expression, mask = (record.get(key) for key in ("image", "expression", "mask"))
        if not (isinstance(image, str) and isinstance(expression, str) and isinstance(mask, str | None)):
            raise ValueError(
                f"{path}:{number}: needs strings image and expression, and mask a string or null"
            )
        category = str(record.get("category", ""))
        samples.append(Sample(folder / image, expression, None if mask is None else folder / mask, category))
    return samples


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A truth mask: the non-zero pixels of a single-channel image of ``width`` x ``height``."""
    with Image.open(path) as image:
        pixels = np.asarray(image)
    if pixels.shape != (height, width):
        raise ValueError(f"{path}: a truth mask must be one channel of {width}x{height}, not {pixels.shape}")
    mask = pixels > 0
    if not mask.any():
        raise ValueError(f'{path}: an empty truth mask (an absent target is "mask": null)')
    return mask


def score(predicted: np.ndarray | None, truth: np.ndarray | None, category: str = "") -> Outcome:
    """One sample: ``predicted`` None is a no_match answer, ``truth`` None an absent target."""
    if truth is None:
        return Outcome(False, predicted is None, category=category)
    if predicted is None:
        return Outcome(True, True, 0, int(np.count_nonzero(truth)), category)
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted mask {predicted.shape} against a truth mask of {truth.shape}")
    intersection = int(np.count_nonzero(predicted & truth))
    return Outcome(True, False, intersection, int(np.count_nonzero(predicted | truth)), category)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def figures(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures over ``outcomes``, unrounded."""
    present = [o for o in outcomes if o.present]
    absent = [o for o in outcomes if not o.present]
    no_match = [o for o in outcomes if o.no_match]
    return {
        "samples": len(outcomes),
        "present": len(present),
        "absent": len(absent),
        "miou": _share(sum(o.iou for o in present), len(present)),
        "ciou": _share(sum(o.intersection for o in present), sum(o.union for o in present)),
        "acc_at_0_5": _share(sum(o.iou >= IOU_HIT for o in present), len(present)),
        "no_match_answers": len(no_match),
        "missed_present": sum(o.present for o in no_match),  # present targets answered no_match
        "no_match_precision": _share(sum(not o.present for o in no_match), len(no_match)),
        "no_match_recall": _share(sum(o.no_match for o in absent), len(absent)),
    }


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """``figures``, and the samples, mIoU and no_match recall of each category."""
    groups: defaultdict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.category:
            groups[outcome.category].append(outcome)
    categories = {}
    for name, group in sorted(groups.items()):
        found = figures(group)
        keys = ("samples", "miou", "no_match_recall")
        categories[name] = {key: found[key] for key in keys if found[key] is not None}
    return {**figures(outcomes), "categories": categories}


def predict(
    pipeline: Segments, image: DecodedImage, expression: str, options: JobOptions
) -> np.ndarray | None:
    """The union of the masks ``pipeline`` answers for ``expression``, at the image's size (each mask
    scaled as the worker scales it); None for no_match."""
    (result,) = pipeline.run(image.pixels, [expression], options)
    if not result.segments:
        return None
    return np.logical_or.reduce([image.full_size(segment.mask) for segment in result.segments])


def evaluate(
    pipeline: Segments,
    samples: Sequence[Sample],
    options: JobOptions,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> list[Outcome]:
    outcomes = []
    # The last image decoded: a set lists an image's samples together (the pipeline caches its embedding).
    decoded: tuple[Path, DecodedImage] | None = None
    for sample in samples:
        if decoded is None or decoded[0] != sample.image:
            decoded = sample.image, decode_image(sample.image.read_bytes(), max_pixels, max_side)
        image = decoded[1]
        truth = None if sample.mask is None else read_mask(sample.mask, image.width, image.height)
        outcomes.append(score(predict(pipeline, image, sample.expression, options), truth, sample.category))
    return outcomes


def load_pipeline(settings: Settings, name: str) -> tuple[Pipeline, str]:
    """Pipeline ``name`` and its device, loaded as a worker loads it, from ``settings.model_dir`` only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from smartseg.worker.celery_worker import load_pipelines  # celery and the storage client: the CLI only

    try:
        loaded = load_pipelines(settings.updated(pipelines=[name], model_uri=None))
    except WorkerStartError as exc:
        sys.exit(f"{exc}\n(bench/quality.py reads {settings.model_dir} only: put the model folders there)")
    return loaded.pipelines[name], loaded.device


# RefCOCO ------------------------------------------------------------------------------------------------


def coco_mask(segmentation: list[list[float]] | dict[str, Any], height: int, width: int) -> np.ndarray:
    """A COCO annotation's mask: polygons (pixels whose centres are inside, polygons OR-ed) or RLE."""
    if isinstance(segmentation, dict):
        return decode_rle(segmentation)
    polygons = [{"exterior": polygon} for polygon in segmentation]
    return rasterize_polygons({"width": width, "height": height, "polygons": polygons})


def _turned(path: Path) -> bool:
    """Whether the worker would turn or mirror the image (EXIF orientation): COCO's masks are not."""
    with Image.open(path) as image:
        return image.getexif().get(ExifTags.Base.Orientation, 1) != 1


def convert_refcoco(
    refs_file: Path,
    instances_file: Path,
    images: Path,
    out: Path,
    split: str = "val",
    absent_per_image: int = 1,
    seed: int = 0,
) -> Counter[str]:
    """Write RefCOCO's ``split`` as a set in ``out``: a sample per sentence, with the referred annotation's
    mask, and per image ``absent_per_image`` sentences of other images' refs that name a COCO category this
    image has no annotation of (RefCOCO itself has no absent targets). Images stay where they are."""
    with refs_file.open("rb") as file:
        # The dataset's own format, a Python 2 pickle: unpickling can run code, so use a copy you trust.
        refs = [ref for ref in pickle.load(file, encoding="latin1") if ref["split"] == split]  # noqa: S301
    coco = json.loads(instances_file.read_text())
    image_info = {image["id"]: image for image in coco["images"]}
    annotations = {annotation["id"]: annotation for annotation in coco["annotations"]}
    category_names = {category["id"]: category["name"] for category in coco["categories"]}
    categories_in: defaultdict[int, set[int]] = defaultdict(set)
    for annotation in coco["annotations"]:
        categories_in[annotation["image_id"]].add(annotation["category_id"])
    (out / "masks").mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    kept: dict[int, Path | None] = {}  # image id -> its path, None when skipped
    lines, naming = [], []
    for ref in refs:
        info = image_info[ref["image_id"]]
        if ref["image_id"] not in kept:
            path = (images / info["file_name"]).resolve()
            kept[ref["image_id"]] = None if _turned(path) else path
        image_path = kept[ref["image_id"]]
        if image_path is None:
            counts["refs skipped (EXIF-turned image)"] += 1
            continue
        mask = f"masks/{ref['ann_id']}.png"
        if not (out / mask).exists():
            segmentation = annotations[ref["ann_id"]]["segmentation"]
            Image.fromarray(coco_mask(segmentation, info["height"], info["width"])).save(out / mask)
        name = category_names[ref["category_id"]]
        for sentence in ref["sentences"]:
            lines.append({"image": str(image_path), "expression": sentence["sent"], "mask": mask})
            if re.search(rf"\b{re.escape(name)}s?\b", sentence["sent"]):
                naming.append((ref["category_id"], sentence["sent"]))
    counts["present"] = len(lines)
    rng = random.Random(seed)
    for image_id, image_path in kept.items():
        for _ in range(absent_per_image if image_path and naming else 0):
            for _attempt in range(100):
                category, sentence = rng.choice(naming)
                if category not in categories_in[image_id]:
                    line = {
                        "image": str(image_path),
                        "expression": sentence,
                        "mask": None,
                        "category": ABSENT,
                    }
                    lines.append(line)
                    counts["absent"] += 1
                    break
    counts["images"] = sum(path is not None for path in kept.values())
    lines.sort(key=lambda line: str(line["image"]))  # stable: an image's samples together, in ref order
    (out / ANNOTATIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return counts


# Command line -------------------------------------------------------------------------------------------


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def score_set(args: argparse.Namespace, folder: Path, described: str) -> dict[str, Any]:
    settings = Settings()
    changes = {"model_dir": args.model_dir, "device": args.device, "dtype": args.dtype}
    settings = settings.updated(**{key: value for key, value in changes.items() if value is not None})
    pipeline, device = load_pipeline(settings, args.pipeline)
    options = JobOptions(
        max_masks=args.max_masks, box_threshold=args.box_threshold, text_threshold=args.text_threshold
    )
    samples = load_set(folder)[: args.limit]
    started = time.perf_counter()
    outcomes = evaluate(pipeline, samples, options, settings.max_image_pixels, settings.decode_max_side)
    seconds = time.perf_counter() - started
    found = summarise(outcomes)
    print(
        f"{args.pipeline} on {described}: {found['samples']} samples ({found['present']} present, "
        f"{found['absent']} absent), {1000 * seconds / max(len(samples), 1):.1f} ms a sample\n"
        f"mIoU {_show(found['miou'])}   cIoU {_show(found['ciou'])}   "
        f"acc@0.5 {_show(found['acc_at_0_5'])}\n"
        f"no_match: {found['no_match_answers']} answers ({found['missed_present']} on present targets), "
        f"precision {_show(found['no_match_precision'])}, recall {_show(found['no_match_recall'])}"
    )
    for name, group in found["categories"].items():
        shown = "   ".join(f"{key} {_show(value)}" for key, value in group.items() if key != "samples")
        print(f"  {name:22} {group['samples']:5} samples   {shown}")
    return {
        "command": shlex.join(["python", "bench/quality.py", *sys.argv[1:]]),
        "pipeline": args.pipeline,
        "model": pipeline.model,
        "device": device,
        "set": described,
        "options": options.model_dump(exclude={"output_format"}),
        **found,
        "seconds": seconds,
        "ms_per_sample": 1000 * seconds / max(len(samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", choices=PIPELINE_NAMES, default="lite")
    parser.add_argument(
        "--set", type=Path, dest="folder", help="the set's folder (with --generate: write it there)"
    )
    parser.add_argument("--generate", type=int, metavar="N", help="score a generated set of N scenes")
    parser.add_argument("--seed", type=int, default=0, help="of the generated set")
    parser.add_argument("--limit", type=int, help="score only the first N samples")
    defaults = JobOptions()
    parser.add_argument("--max-masks", type=int, default=1)
    parser.add_argument("--box-threshold", type=float, default=defaults.box_threshold)
    parser.add_argument("--text-threshold", type=float, default=defaults.text_threshold)
    parser.add_argument("--model-dir", help="default: SMARTSEG_MODEL_DIR")
    parser.add_argument("--device", choices=get_args(DeviceSetting), help="default: SMARTSEG_DEVICE")
    parser.add_argument("--dtype", choices=get_args(DtypeSetting), help="default: SMARTSEG_DTYPE")
    parser.add_argument("--out", type=Path, help="default: bench/results/quality_<pipeline>.json")
    commands = parser.add_subparsers(dest="command")
    convert = commands.add_parser("convert-refcoco", help="write a set from RefCOCO (see the module's help)")
    convert.add_argument("--refs", type=Path, required=True, help="refs(unc).p")
    convert.add_argument("--instances", type=Path, required=True, help="instances.json")
    convert.add_argument("--images", type=Path, required=True, help="COCO train2014 image folder")
    convert.add_argument("--split", default="val", help="train, val, testA or testB (default val)")
    convert.add_argument("--absent-per-image", type=int, default=1)
    convert.add_argument("--out", type=Path, required=True, dest="set_out", help="the set's folder")
    args = parser.parse_args()

    if args.command == "convert-refcoco":
        counts = convert_refcoco(
            args.refs, args.instances, args.images, args.set_out, args.split, args.absent_per_image, args.seed
        )
        print(f"wrote {args.set_out / ANNOTATIONS}: {dict(counts)}")
        return
    if args.generate is None and args.folder is None:
        parser.error("give --set FOLDER or --generate N")
    with tempfile.TemporaryDirectory() as temporary:
        if args.generate is not None:
            folder = write_referring_set(args.folder or Path(temporary), args.generate, args.seed)
            described = f"a generated set ({args.generate} scenes, seed {args.seed})"
        else:
            folder, described = args.folder, str(args.folder)
        report = _rounded(score_set(args, folder, described))
    out = args.out or RESULTS / f"quality_{args.pipeline}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
