"""The weight-free "lite" pipeline: classical colour/region segmentation of flat-coloured shapes on a
plain background. It is the offline default of the local demo and the deterministic backend of system
tests, so it must be exact on such scenes and must say "no match" rather than guess on anything else.

How it sees an image:
- The background is the median colour of the image border; pixels far enough from it are foreground,
  and each connected foreground area big enough not to be a speck is a region.
- Each region's edge is re-thresholded at half coverage of the region's own colour, so blur, JPEG and
  antialiasing do not grow or shrink it; holes are filled.
- A region is named by colour (HSV bins: red, orange, yellow, green, cyan, blue, purple, pink, brown,
  white, gray, black) and by shape from how much of its box it fills and the box's aspect ratio:
  square (fills it, aspect < 1.3), bar (fills it, elongated), circle (~pi/4, round), ellipse
  (~pi/4, elongated), triangle (~1/2), else blob. Shapes are judged axis-aligned: a diamond is a triangle.

How a phrase matches a region: every word must be a colour word, a shape word or a neutral word, else
the phrase matches nothing ("red shoe" -> no match). Synonyms: grey = gray, violet = purple,
magenta = pink, aqua/turquoise/teal = cyan, navy = blue, lime = green, gold = yellow, crimson/scarlet =
red; disc/disk/dot/ball/round = circle, oval = ellipse, stripe/strip/band = bar; plurals are singular.
"bar" is an elongated rectangle, "square" is not a bar, and "rectangle" means a bar fully and a square
partly (as does "circle" for an ellipse and back). Generic nouns ("object", "shape", "thing", "region",
"blob", "item") and shade adjectives ("light", "dark", ...) match any region. The score is the word
match (1, or ``RELATED_KIND_SCORE`` for a related shape) times the region's contrast confidence.
Known limits: touching shapes merge into one region; textured or multi-colour backgrounds break it.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from smartseg.shared.jobspec import JobOptions
from smartseg.worker.pipeline.base import Candidate, Pipeline, mask_box

# Regions.
BORDER_WIDTH = 3  # px of image border sampled to estimate the background colour
FOREGROUND_MIN_DISTANCE = 40.0  # RGB distance from the background that always counts as foreground
FOREGROUND_NOISE_FACTOR = 4.0  # ...or this many times the border's median distance, on noisy images
MIN_REGION_FRACTION = 0.0003  # regions under this share of the image are specks
MIN_REGION_PIXELS = 20
MAX_REGIONS = 64  # only the largest regions are kept: bounds the runtime on busy photos
EDGE_PAD = 3  # px around a region searched when refining its edge
COVERAGE_THRESHOLD = 0.5  # a pixel belongs to a region when it is at least half the region's colour
FULL_CONFIDENCE_CONTRAST = 80.0  # RGB distance from the background at which a region is certain
# 4-connectivity, scipy's default for labelling and hole filling; built once, not on every call.
CROSS = ndimage.generate_binary_structure(2, 1)

# Colour names from HSV (hue in degrees, saturation and value in 0..1).
BLACK_MAX_VALUE = 0.22
GRAY_MAX_SATURATION = 0.18
WHITE_MIN_VALUE = 0.85
BROWN_MAX_VALUE = 0.65  # darker oranges are brown
PINK_MAX_SATURATION = 0.5  # paler reds are pink
PURPLE_MAX_VALUE = 0.6  # darker pinks (magenta hues) are purple
HUE_BINS = (
    (15, "red"),
    (42, "orange"),
    (70, "yellow"),
    (165, "green"),
    (195, "cyan"),
    (255, "blue"),
    (290, "purple"),
    (345, "pink"),
    (360, "red"),
)

# Shapes from the fill of the box (square 1, circle pi/4, triangle 1/2) and its longer/shorter side.
RECTANGLE_MIN_FILL = 0.87
ROUND_MIN_FILL = 0.68
TRIANGLE_MIN_FILL = 0.38
SQUARE_MAX_ASPECT = 1.3  # beyond this a rectangle is a bar and a circle an ellipse
RELATED_KIND_SCORE = 0.6  # match score of a related shape ("rectangle" for a square)

COLOR_NAMES = (
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
    "brown",
    "white",
    "gray",
    "black",
)
_COLOR_WORDS = {name: name for name in COLOR_NAMES} | {
    "grey": "gray",
    "violet": "purple",
    "magenta": "pink",
    "aqua": "cyan",
    "turquoise": "cyan",
    "teal": "cyan",
    "navy": "blue",
    "lime": "green",
    "gold": "yellow",
    "crimson": "red",
    "scarlet": "red",
}
_KIND_WORDS = {
    "circle": "circle",
    "circular": "circle",
    "disc": "circle",
    "disk": "circle",
    "dot": "circle",
    "ball": "circle",
    "round": "circle",
    "ellipse": "ellipse",
    "oval": "ellipse",
    "square": "square",
    "rectangle": "rectangle",
    "rectangular": "rectangle",
    "bar": "bar",
    "stripe": "bar",
    "strip": "bar",
    "band": "bar",
    "triangle": "triangle",
    "triangular": "triangle",
}
KIND_NAMES = ("circle", "ellipse", "square", "rectangle", "bar", "triangle")
# (asked kind, region kind) -> score; absent pairs do not match.
_KIND_MATCH = {
    ("circle", "circle"): 1.0,
    ("circle", "ellipse"): RELATED_KIND_SCORE,
    ("ellipse", "ellipse"): 1.0,
    ("ellipse", "circle"): RELATED_KIND_SCORE,
    ("square", "square"): 1.0,
    ("rectangle", "bar"): 1.0,
    ("rectangle", "square"): RELATED_KIND_SCORE,
    ("bar", "bar"): 1.0,
    ("triangle", "triangle"): 1.0,
}
# Words that narrow nothing lite can see: generic nouns and shade or finish adjectives.
_NEUTRAL_WORDS = frozenset(
    {"object", "shape", "thing", "region", "blob", "item", "figure", "form", "segment", "area", "spot"}
    | {"light", "dark", "bright", "pale", "deep", "colored", "coloured", "solid", "filled", "shaped", "plain"}
)
_KNOWN_WORDS = _COLOR_WORDS.keys() | _KIND_WORDS.keys() | _NEUTRAL_WORDS


@dataclass(frozen=True)
class Region:
    """One coloured area of the image as lite sees it."""

    mask: np.ndarray  # bool HxW, holes filled
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the mask (x1/y1 exclusive)
    area: int  # mask pixels
    color: str
    kind: str  # circle, ellipse, square, bar, triangle or blob
    contrast: float  # RGB distance of its colour from the background

    @property
    def label(self) -> str:
        return f"{self.color} {'region' if self.kind == 'blob' else self.kind}"


def name_color(rgb: Sequence[float]) -> str:
    """Name an RGB colour (0..255 channels) with one of ``COLOR_NAMES``."""
    hue, saturation, value = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    if value < BLACK_MAX_VALUE:
        return "black"
    if saturation < GRAY_MAX_SATURATION:
        return "white" if value >= WHITE_MIN_VALUE else "gray"
    name = next(name for upper, name in HUE_BINS if hue * 360 < upper)
    if name == "orange" and value < BROWN_MAX_VALUE:
        return "brown"
    if name == "red" and saturation < PINK_MAX_SATURATION:
        return "pink"
    if name == "pink" and value < PURPLE_MAX_VALUE:
        return "purple"
    return name


def _shape_of_box(width: int, height: int, area: int) -> str:
    """Name a shape of ``area`` pixels from the ``width`` x ``height`` box it spans."""
    fill = area / (width * height)
    elongated = max(width, height) / min(width, height) >= SQUARE_MAX_ASPECT
    if fill >= RECTANGLE_MIN_FILL:
        return "bar" if elongated else "square"
    if fill >= ROUND_MIN_FILL:
        return "ellipse" if elongated else "circle"
    if fill >= TRIANGLE_MIN_FILL:
        return "triangle"
    return "blob"


# Much of lite's work is on small crops, where the fixed cost of a numpy or scipy.ndimage call outweighs
# the work itself; so the helpers below trade generality for fewer, cheaper calls.


def _median(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1)`` of finite values, from one partition without np.median's fixed
    overhead. Colours are passed channel-first (3xN): partitioning along rows is the faster way."""
    half = values.shape[-1] // 2
    if values.shape[-1] % 2:
        return np.partition(values, half)[..., half]
    middle = np.partition(values, (half - 1, half))
    return (middle[..., half - 1] + middle[..., half]) / 2


def _erode(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_erosion(mask)`` (by CROSS, pixels beyond the edge unset) from array slices."""
    eroded = np.zeros_like(mask)
    eroded[1:-1, 1:-1] = (
        mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    )
    return eroded


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=iterations)`` (by CROSS) from array slices."""
    for _ in range(iterations):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` of a bool mask, or the mask itself when it has none. Faster: most
    masks pass a cheap no-holes test, the others are filled within their box by one labelling of the
    background framed by a 1 px ring, which joins all background that reaches the outside."""
    # No holes when each row holds at most one run of the mask (as in any convex shape): every
    # background pixel then reaches the edge along its row.
    runs = np.count_nonzero(mask[:, :1]) + np.count_nonzero(mask[:, 1:] > mask[:, :-1])
    if runs == np.count_nonzero(mask.any(axis=1)):
        return mask
    x0, y0, x1, y1 = mask_box(mask)
    framed = np.ones((y1 - y0 + 2, x1 - x0 + 2), dtype=bool)
    np.logical_not(mask[y0:y1, x0:x1], out=framed[1:-1, 1:-1])
    parts, _ = ndimage.label(framed, CROSS)
    filled = mask.copy()
    filled[y0:y1, x0:x1] = parts[1:-1, 1:-1] != parts[0, 0]
    return filled


def _background(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """The background colour and the RGB distance beyond which a pixel is foreground."""
    border = np.concatenate(
        [
            pixels[:BORDER_WIDTH].reshape(-1, 3),
            pixels[-BORDER_WIDTH:].reshape(-1, 3),
            pixels[:, :BORDER_WIDTH].reshape(-1, 3),
            pixels[:, -BORDER_WIDTH:].reshape(-1, 3),
        ]
    )
    border = border.T.copy()  # channel-first: 3xN
    color = _median(border)
    spread = float(_median(np.sqrt(((border - color[:, None]) ** 2).sum(axis=0))))
    return color, max(FOREGROUND_MIN_DISTANCE, FOREGROUND_NOISE_FACTOR * spread)


def _refine(
    offsets: list[np.ndarray], background: np.ndarray, seed: np.ndarray, window: tuple[slice, slice]
) -> Region | None:
    """Re-threshold a region (``seed`` inside ``window``) at half coverage of its own colour; ``offsets``
    are the image's channels minus the background's."""
    red, green, blue = (channel[window] for channel in offsets)
    core = _erode(seed)
    inner = core if core.any() else seed
    direction = _median(np.array([red[inner], green[inner], blue[inner]]))  # region colour - background
    contrast = float(np.linalg.norm(direction))
    if contrast < FOREGROUND_MIN_DISTANCE:
        return None
    coverage = (red * direction[0] + green * direction[1] + blue * direction[2]) / contrast**2
    inside = (coverage >= COVERAGE_THRESHOLD) & _dilate(seed, EDGE_PAD - 1)
    parts, count = ndimage.label(inside, CROSS)
    if count == 0:
        return None
    largest = 1 if count == 1 else np.argmax(np.bincount(parts.ravel())[1:]) + 1
    # The rest happens in the largest part's box, which holds all its holes.
    part = parts == largest
    x0, y0, x1, y1 = mask_box(part)
    shape = _fill_holes(part[y0:y1, x0:x1])
    top, left = window[0].start, window[1].start
    mask = np.zeros(offsets[0].shape, dtype=bool)
    mask[top + y0 : top + y1, left + x0 : left + x1] = shape
    box = (left + x0, top + y0, left + x1, top + y1)
    area = int(np.count_nonzero(shape))
    kind = _shape_of_box(x1 - x0, y1 - y0, area)
    return Region(mask, box, area, name_color(background + direction), kind, contrast)


def find_regions(image: np.ndarray) -> list[Region]:
    """All regions of an HxWx3 uint8 image, largest first."""
    if image.size == 0:  # no border to take the background from
        return []
    pixels = image.astype(np.float32)
    background, threshold = _background(pixels)
    # Channel by channel: numpy is several times slower broadcasting over a last axis of length 3.
    offsets = [pixels[..., channel] - background[channel] for channel in range(3)]
    red, green, blue = offsets
    foreground = red**2 + green**2 + blue**2 > threshold**2
    if not foreground.any():
        return []
    # Label only within the foreground's box: far fewer pixels to scan on a sparse image.
    x0, y0, x1, y1 = mask_box(foreground)
    labels = np.zeros(foreground.shape, dtype=np.int32)
    in_box = labels[y0:y1, x0:x1]  # a view: labelling it fills ``labels``
    count = ndimage.label(foreground[y0:y1, x0:x1], CROSS, output=in_box)
    areas = np.bincount(in_box.ravel())[1:]
    min_area = max(MIN_REGION_PIXELS, MIN_REGION_FRACTION * labels.size)
    bounds = ndimage.find_objects(in_box, count)
    height, width = labels.shape
    regions = []
    for index in np.argsort(-areas, kind="stable")[:MAX_REGIONS]:
        if areas[index] < min_area:
            break
        rows, cols = bounds[index]
        window = (
            slice(max(y0 + rows.start - EDGE_PAD, 0), min(y0 + rows.stop + EDGE_PAD, height)),
            slice(max(x0 + cols.start - EDGE_PAD, 0), min(x0 + cols.stop + EDGE_PAD, width)),
        )
        region = _refine(offsets, background, labels[window] == index + 1, window)
        if region is not None and region.area >= min_area:
            regions.append(region)
    return sorted(regions, key=lambda r: -r.area)


@dataclass(frozen=True)
class _Query:
    """What a phrase asks for; an empty set means "any"."""

    colors: frozenset[str]
    kinds: frozenset[str]

    def match(self, region: Region) -> float:
        if self.colors and region.color not in self.colors:
            return 0.0
        if not self.kinds:
            return 1.0
        return max(_KIND_MATCH.get((kind, region.kind), 0.0) for kind in self.kinds)


def _parse_phrase(phrase: str) -> _Query | None:
    """The query a phrase asks for, or None when it names something lite cannot recognise."""
    colors, kinds = set(), set()
    for raw in re.sub(r"[\W_]+", " ", phrase.lower()).split():
        word = raw[:-1] if raw not in _KNOWN_WORDS and raw.endswith("s") else raw
        if word in _COLOR_WORDS:
            colors.add(_COLOR_WORDS[word])
        elif word in _KIND_WORDS:
            kinds.add(_KIND_WORDS[word])
        elif word not in _NEUTRAL_WORDS:
            return None
    return _Query(frozenset(colors), frozenset(kinds))


class LiteDetector:
    """Matches phrases against the image's regions; the candidates carry the region masks."""

    def detect(self, image: np.ndarray, phrases: Sequence[str], options: JobOptions) -> list[list[Candidate]]:
        regions = find_regions(image)
        return [self._candidates(regions, phrase, options) for phrase in phrases]

    @staticmethod
    def _candidates(regions: list[Region], phrase: str, options: JobOptions) -> list[Candidate]:
        query = _parse_phrase(phrase)
        if query is None:
            return []
        found = []
        for region in regions:
            match = query.match(region)
            score = match * min(1.0, region.contrast / FULL_CONFIDENCE_CONTRAST)
            if match > 0 and match >= options.text_threshold and score >= options.box_threshold:
                found.append(Candidate(region.label, score, region.box, region.mask))
        return sorted(found, key=lambda c: -c.score)  # stable: equal scores stay largest first


class LiteSegmenter:
    """Fills holes in candidate masks; a box-only candidate (from another detector) gets the region
    that covers most of its box, cut to the box, or an empty mask when no region is there."""

    def segment(self, image: np.ndarray, candidates: list[Candidate]) -> list[Candidate]:
        regions: list[Region] | None = None
        segmented = []
        for candidate in candidates:
            mask = candidate.mask
            if mask is None:
                regions = find_regions(image) if regions is None else regions
                mask = _mask_in_box(regions, candidate.box, image.shape[:2])
            # astype copies: the output never shares the candidate's mask
            segmented.append(replace(candidate, mask=_fill_holes(mask.astype(bool))))
        return segmented


def _mask_in_box(
    regions: list[Region], box: tuple[float, float, float, float], shape: tuple[int, ...]
) -> np.ndarray:
    x0, y0, x1, y1 = box
    in_box = np.zeros(shape, dtype=bool)
    in_box[max(math.floor(y0), 0) : math.ceil(y1), max(math.floor(x0), 0) : math.ceil(x1)] = True
    overlaps = [region.mask & in_box for region in regions]
    return max(overlaps, key=np.count_nonzero, default=np.zeros(shape, dtype=bool))


def build_lite_pipeline() -> Pipeline:
    return Pipeline(name="lite", model="lite", detector=LiteDetector(), segmenter=LiteSegmenter())
