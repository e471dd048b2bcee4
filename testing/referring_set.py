"""A generated referring-segmentation set in the on-disk format ``bench/quality.py`` scores.

Images are ``generate_scene`` scenes; expressions are the scene's unambiguous prompt cases
(``scene_prompts``) that name exactly one shape (colour, kind, colour+kind, position, size, ordinal) or
none at all (an absent colour+kind or colour, an ordinal past the last shape of a kind, an object lite does
not know): one referent or none, as in RefCOCO, so a single predicted mask can be scored against it.
Cases that name several shapes ("circle" in a scene with two) are left out.

Layout (``bench/quality.py`` documents the format)::

    annotations.jsonl   {"image": "images/0003.png", "expression": "left circle",
                         "mask": "masks/0003_05.png", "category": "position"}, one per line;
                        "mask": null where the target is absent
    images/NNNN.png     the scenes
    masks/NNNN_KK.png   1-bit PNGs the size of their image, set on the target's pixels
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from smartseg.testing.scenes import generate_scene, scene_prompts

ANNOTATIONS = "annotations.jsonl"


def write_referring_set(folder: Path, count: int, seed: int) -> Path:
    """Write ``count`` scenes and their single-target and absent-target expressions under ``folder``;
    returns ``folder``. The same ``count`` and ``seed`` write the same set."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    scene_seeds = np.random.default_rng(seed).integers(0, 2**31, size=count)
    lines = []
    for index, scene_seed in enumerate(scene_seeds.tolist()):
        scene = generate_scene(scene_seed)
        image = f"images/{index:04d}.png"
        scene.image.save(folder / image)
        for number, case in enumerate(scene_prompts(scene)):
            mask = None
            if case.expected is not None:
                if not any(np.array_equal(case.expected, shape.mask) for shape in scene.shapes):
                    continue  # names more than one shape
                mask = f"masks/{index:04d}_{number:02d}.png"
                Image.fromarray(case.expected).save(folder / mask)  # bool -> 1-bit PNG
            lines.append({"image": image, "expression": case.prompt, "mask": mask, "category": case.category})
    (folder / ANNOTATIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder
