"""Synthetic scenes with exact ground truth: flat coloured shapes on a light, slightly noisy background.

They drive the lite pipeline's accuracy tests, the system tests and the local demo, so everything here is
deterministic given a seed. Shapes are drawn antialiased (supersampled) and a pixel belongs to a shape's
truth mask when the shape covers at least half of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

Kind = Literal["circle", "square", "triangle", "bar"]
KINDS: tuple[Kind, ...] = ("circle", "square", "triangle", "bar")
# Colours near the middle of their hue/brightness bins, so a small jitter keeps their name.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 210, 20),
    "green": (40, 170, 60),
    "cyan": (25, 190, 195),
    "blue": (30, 70, 220),
    "purple": (130, 50, 190),
    "pink": (240, 110, 180),
    "brown": (130, 75, 30),
    "gray": (120, 120, 120),
    "black": (30, 30, 30),
}
_GRAYS = frozenset({"gray", "black"})  # jittered by one offset on all channels so they stay neutral

SUPERSAMPLE = 4  # drawing scale for antialiased edges
NOISE_SIGMA = 3.0  # per-channel Gaussian noise over the whole image
COLOR_JITTER = 8  # max per-channel change of a shape's colour
BACKGROUND_RANGE = (228, 250)  # light background, each channel drawn from this range
EDGE_MARGIN = 6.0  # px kept free along the image border
SHAPE_GAP = 8.0  # px between shapes' boxes: shapes never touch
SHAPE_SIZE_RANGE = (0.12, 0.35)  # a shape's main size, as a share of the shorter image side
MIN_BAR_THICKNESS = 8.0
PLACEMENT_ATTEMPTS = 200  # per shape; a shape that does not fit is left out

# Prompt cases are emitted only when their answer is unambiguous.
MAX_EXPECTED_MATCHES = 3  # the default max_masks: a prompt matching more shapes could not return all
POSITION_MARGIN = 8.0  # px: a positional or ordinal pick must beat its neighbours by this much
CENTER_MARGIN = 0.05  # the same for "middle", in image-normalised distance
SIZE_RATIO = 1.25  # a size pick must be this many times larger (smaller) than the runner-up
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")

Box = tuple[float, float, float, float]
Key = Callable[["ShapeTruth"], float]  # ranks shapes for a qualifier; smaller comes first


@dataclass(frozen=True)
class ShapeTruth:
    color: str
    kind: Kind
    mask: np.ndarray  # bool HxW
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the mask (x1/y1 exclusive)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class Scene:
    image: Image.Image  # RGB
    shapes: list[ShapeTruth]


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    expected: np.ndarray | None  # union of the masks that should come back; None = no_match expected
    category: str  # what the case exercises, e.g. "color", "position", "absent"


@dataclass(frozen=True)
class _Spec:
    kind: Kind
    color: str
    box: Box
    pointing_up: bool = True  # triangles only


def _coverage(spec: _Spec, width: int, height: int) -> np.ndarray:
    """How much of each pixel the shape covers, 0..1."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = (v * s for v in spec.box)
    if spec.kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif spec.kind == "triangle":
        apex, base = (y0, y1 - 1) if spec.pointing_up else (y1 - 1, y0)
        draw.polygon([(x0, base), (x1 - 1, base), ((x0 + x1 - 1) / 2, apex)], fill=255)
    else:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    return np.asarray(canvas.reduce(s), dtype=np.float32) / 255


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _render(specs: Sequence[_Spec], width: int, height: int, rng: np.random.Generator) -> Scene:
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1, size=3)
    shapes = []
    for spec in specs:
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        if spec.color in _GRAYS:
            jitter[:] = jitter[0]
        color = np.clip(np.array(COLORS[spec.color]) + jitter, 0, 255)
        cover = _coverage(spec, width, height)[..., None]
        canvas = canvas * (1 - cover) + color * cover
        mask = cover[..., 0] >= 0.5
        shapes.append(ShapeTruth(spec.color, spec.kind, mask, _mask_box(mask)))
    canvas += rng.normal(0.0, NOISE_SIGMA, canvas.shape)
    return Scene(Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8)), shapes)


def _shape_extent(kind: Kind, size: float, rng: np.random.Generator) -> tuple[float, float]:
    """Width and height of a shape whose main size is ``size``."""
    if kind == "triangle":
        return size * rng.uniform(1.0, 1.3), size
    if kind == "bar":
        length = size * rng.uniform(1.2, 1.6)
        thickness = max(MIN_BAR_THICKNESS, length / rng.uniform(2.8, 4.5))
        return (length, thickness) if rng.random() < 0.5 else (thickness, length)
    return size, size


def _apart(box: Box, others: Sequence[Box]) -> bool:
    x0, y0, x1, y1 = box
    return all(
        x1 + SHAPE_GAP <= ox0 or ox1 + SHAPE_GAP <= x0 or y1 + SHAPE_GAP <= oy0 or oy1 + SHAPE_GAP <= y0
        for ox0, oy0, ox1, oy1 in others
    )


def generate_scene(
    seed: int, width: int = 320, height: int = 240, min_shapes: int = 3, max_shapes: int = 6
) -> Scene:
    """A random scene of ``min_shapes``..``max_shapes`` non-touching shapes, each colour+kind at most once
    (colours and kinds repeat on their own). Fewer shapes are drawn only if they do not fit."""
    rng = np.random.default_rng(seed)
    combos = [(color, kind) for color in COLORS for kind in KINDS]
    count = int(rng.integers(min_shapes, max_shapes + 1))
    specs: list[_Spec] = []
    for pick in rng.choice(len(combos), size=count, replace=False):
        color, kind = combos[pick]
        size = rng.uniform(*SHAPE_SIZE_RANGE) * min(width, height)
        shape_w, shape_h = _shape_extent(kind, size, rng)
        for _ in range(PLACEMENT_ATTEMPTS):
            x0 = rng.uniform(EDGE_MARGIN, width - EDGE_MARGIN - shape_w)
            y0 = rng.uniform(EDGE_MARGIN, height - EDGE_MARGIN - shape_h)
            box = (x0, y0, x0 + shape_w, y0 + shape_h)
            if _apart(box, [s.box for s in specs]):
                specs.append(_Spec(kind, color, box, pointing_up=bool(rng.random() < 0.5)))
                break
    return _render(specs, width, height, rng)


def demo_scene() -> Scene:
    """The fixed 480x320 scene of the local demo. Circles are the one repeated kind, so "left circle"
    means something and is the obvious positional prompt."""
    specs = [
        _Spec("circle", "red", (40, 50, 140, 150)),
        _Spec("square", "blue", (190, 40, 270, 120)),
        _Spec("triangle", "green", (320, 30, 440, 130), pointing_up=True),
        _Spec("bar", "yellow", (50, 220, 230, 255)),
        _Spec("circle", "purple", (300, 190, 380, 270)),
        _Spec("circle", "orange", (410, 230, 450, 270)),
    ]
    return _render(specs, 480, 320, np.random.default_rng(0))


def _union(shapes: Sequence[ShapeTruth]) -> np.ndarray:
    return np.logical_or.reduce([s.mask for s in shapes])


def _unambiguous_pick(shapes: Sequence[ShapeTruth], key: Key, rank: int, margin: float) -> ShapeTruth | None:
    """The shape at ``rank`` (0-based) by ascending ``key``, if it is at least ``margin`` from the
    shapes ranked next to it; else None."""
    if rank >= len(shapes):
        return None
    order = sorted(shapes, key=key)
    neighbours = order[max(rank - 1, 0) : rank] + order[rank + 1 : rank + 2]
    picked = order[rank]
    return picked if all(abs(key(picked) - key(n)) >= margin for n in neighbours) else None


_SIDE_KEYS: dict[str, Key] = {
    "left": lambda s: s.center[0],
    "right": lambda s: -s.center[0],
    "top": lambda s: s.center[1],
    "bottom": lambda s: -s.center[1],
}


def _log_area(shape: ShapeTruth) -> float:
    return math.log(shape.area)


_SIZE_MARGIN = math.log(SIZE_RATIO)  # SIZE_RATIO as a margin between log areas


def scene_prompts(scene: Scene) -> list[PromptCase]:
    """Prompt cases with unambiguous answers for ``scene``: colours, kinds, colour+kind, positions,
    sizes, ordinals, and absent targets (expected None)."""
    shapes = scene.shapes
    width, height = scene.image.size
    colors = sorted({s.color for s in shapes})
    kinds = sorted({s.kind for s in shapes})
    by_kind = {kind: [s for s in shapes if s.kind == kind] for kind in kinds}
    cases: list[PromptCase] = []

    def add(prompt: str, expected: Sequence[ShapeTruth], category: str) -> None:
        if len(expected) <= MAX_EXPECTED_MATCHES:
            cases.append(PromptCase(prompt, _union(expected), category))

    def add_pick(
        prompt: str, group: Sequence[ShapeTruth], key: Key, rank: int, margin: float, category: str
    ) -> None:
        """Expect the shape at ``rank`` by ascending ``key`` unless that pick is ambiguous."""
        picked = _unambiguous_pick(group, key, rank, margin)
        if picked is not None:
            cases.append(PromptCase(prompt, picked.mask, category))

    def add_absent(prompt: str, category: str) -> None:
        cases.append(PromptCase(prompt, None, category))

    def from_center(shape: ShapeTruth) -> float:
        return math.hypot(shape.center[0] / width - 0.5, shape.center[1] / height - 0.5)

    left, right, top, bottom = (_SIDE_KEYS[side] for side in ("left", "right", "top", "bottom"))
    for color in colors:
        add(f"{color} shape", [s for s in shapes if s.color == color], "color")
    for kind, group in by_kind.items():
        add(kind, group, "kind")
        if len(group) >= 2:
            add_pick(f"left {kind}", group, left, 0, POSITION_MARGIN, "position")
            add_pick(f"the {kind} on the right", group, right, 0, POSITION_MARGIN, "position")
            add_pick(f"smallest {kind}", group, _log_area, 0, _SIZE_MARGIN, "size")
            add_pick(f"biggest {kind}", group, _log_area, len(group) - 1, _SIZE_MARGIN, "size")
        if len(group) < len(_ORDINALS):
            add_absent(f"{_ORDINALS[len(group)]} {kind} from the left", "ordinal-out-of-range")
    for shape in shapes:
        add(f"{shape.color} {shape.kind}", [shape], "color+kind")
    add_pick("topmost shape", shapes, top, 0, POSITION_MARGIN, "position")
    add_pick("lowest shape", shapes, bottom, 0, POSITION_MARGIN, "position")
    add_pick("leftmost shape", shapes, left, 0, POSITION_MARGIN, "position")
    add_pick("shape in the middle", shapes, from_center, 0, CENTER_MARGIN, "position")
    add_pick("largest shape", shapes, _log_area, len(shapes) - 1, _SIZE_MARGIN, "size")
    add_pick("the smallest object", shapes, _log_area, 0, _SIZE_MARGIN, "size")
    add_pick("second from left shape", shapes, left, 1, POSITION_MARGIN, "ordinal")
    add_pick("2nd shape from the top", shapes, top, 1, POSITION_MARGIN, "ordinal")
    add_pick("third from the right", shapes, right, 2, POSITION_MARGIN, "ordinal")

    absent_combo = next(
        (f"{c} {k}" for c in colors for k in kinds if not any(s.color == c and s.kind == k for s in shapes)),
        None,
    )
    if absent_combo:
        add_absent(absent_combo, "absent")
    add_absent(f"{next(c for c in COLORS if c not in colors)} shape", "absent")
    add_absent("shoe", "unknown")
    add_absent(f"{colors[0]} shoe", "unknown")
    return cases
