"""The selector applies the qualifiers a detector cannot read ("left", "largest", "second from the right")
to the detector's candidates for one prompt. Pure and deterministic: ties keep the higher score, then
the detector's order.

Precedence when a prompt has several qualifiers: ordinal, then position, then size. Positions compare box
centres: sides by the centre's x or y, "center" and corners by the distance to that point of the image in
coordinates normalised to the image size. Sizes compare mask areas, or box areas before segmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from smartseg.worker.pipeline.prompt import ParsedPrompt

if TYPE_CHECKING:
    from smartseg.worker.pipeline.base import Candidate

# Where "center" and the corners are, as fractions of the image width and height.
_ANCHORS = {
    "center": (0.5, 0.5),
    "top-left": (0.0, 0.0),
    "top-right": (1.0, 0.0),
    "bottom-left": (0.0, 1.0),
    "bottom-right": (1.0, 1.0),
}


def _center(candidate: Candidate) -> tuple[float, float]:
    x0, y0, x1, y1 = candidate.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def _area(candidate: Candidate) -> float:
    if candidate.mask is not None:
        return float(candidate.mask.sum())
    x0, y0, x1, y1 = candidate.box
    return (x1 - x0) * (y1 - y0)


# Sort keys that put the candidate nearest to a side first.
_SIDE_KEYS: dict[str, Callable[[Candidate], float]] = {
    "left": lambda c: _center(c)[0],
    "right": lambda c: -_center(c)[0],
    "top": lambda c: _center(c)[1],
    "bottom": lambda c: -_center(c)[1],
}


def _size_key(size: str | None) -> Callable[[Candidate], float]:
    sign = -1 if size == "largest" else 1
    return lambda c: sign * _area(c)


def _anchor_key(anchor: str, image_size: tuple[int, int]) -> Callable[[Candidate], float]:
    width, height = image_size
    ax, ay = _ANCHORS[anchor]

    def distance(candidate: Candidate) -> float:
        cx, cy = _center(candidate)
        return math.hypot(cx / width - ax, cy / height - ay)

    return distance


def _ranked(candidates: list[Candidate], key: Callable[[Candidate], float]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (key(c), -c.score))


def select(
    candidates: list[Candidate], parsed: ParsedPrompt, image_size: tuple[int, int], max_masks: int
) -> list[Candidate]:
    """Pick the candidates a prompt asks for; ``image_size`` is (width, height). Empty means no match."""
    if not candidates or max_masks < 1:
        return []
    if parsed.ordinal is not None:
        if parsed.ordinal_from is not None:
            order = _ranked(candidates, _SIDE_KEYS[parsed.ordinal_from])
        else:  # "second largest": rank by size
            order = _ranked(candidates, _size_key(parsed.size))
        return order[parsed.ordinal - 1 : parsed.ordinal] if parsed.ordinal >= 1 else []
    if parsed.position is not None:
        if parsed.position in _ANCHORS:
            return _ranked(candidates, _anchor_key(parsed.position, image_size))[:1]
        return _ranked(candidates, _SIDE_KEYS[parsed.position])[:1]
    if parsed.size is not None:
        return _ranked(candidates, _size_key(parsed.size))[:1]
    return sorted(candidates, key=lambda c: -c.score)[:max_masks]
