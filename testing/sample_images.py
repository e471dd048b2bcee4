"""Sample images for trying the service offline: rendered tabletop photos with exact truth masks.

New users asked for a few small photos or realistic renders, with a licence, that the weight-free
``lite`` pipeline handles. We have no photos we may ship, so these are renders made here,
deterministically, and committed (dedicated CC0-1.0) under api/static/samples/ by
``python -m smartseg.testing.sample_images api/static/samples``. They look like a phone photo of things
on a table seen from above: light from the top left, shading and highlights, soft cast shadows, a faintly
textured backdrop with a vignette, sensor noise, JPEG. They stay inside what lite can see
(worker/pipeline/lite.py): the backdrop and shadows vary well under lite's foreground distance, objects
never touch, and shading keeps each object one region of one colour name and one shape kind.

Objects are shaded at ``SUPERSAMPLE`` times the resolution and averaged down, so edges are antialiased;
a pixel belongs to an object's truth mask when the object covers at least half of it (as in scenes.py).
The geometry draws no random numbers, so the truth masks do not depend on the noise.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from smartseg.testing.scenes import SUPERSAMPLE

SAMPLE_NAMES: tuple[str, ...] = ("toys", "fruit", "desk")
LICENCE = "CC0-1.0 (rendered by smartseg.testing.sample_images)"
JPEG_QUALITY = 90

# Light: the unit vector towards it, from the top left and well above (image y points down).
LIGHT = np.array([-0.35, -0.45, 1.0], dtype=np.float32) / math.hypot(0.35, 0.45, 1.0)
# Halfway between the light and the eye (straight above): a surface facing it shows the highlight.
_LIGHT_AND_EYE = LIGHT + np.array([0, 0, 1], dtype=np.float32)
HALFWAY = _LIGHT_AND_EYE / float(np.linalg.norm(_LIGHT_AND_EYE))
AMBIENT = 0.45  # share of light that reaches even faces turned away from the lamp
# Shadows, vignette and table texture together stay well under lite's 40 RGB foreground distance (23
# levels on all three channels): before noise, no table pixel is more than about 28 from the border's
# median colour, so noise and JPEG never lift a patch of table into a region.
SHADOW_STRENGTH = 0.08  # darkening of the table under a cast shadow's core
CONTACT_STRENGTH = 0.06  # extra darkening right at an object's foot
MAX_SHADOW = 0.065  # the darkest any shadow gets
LIGHT_FALLOFF = 0.02  # table brightness from the top-left corner to the bottom-right, as a share
VIGNETTE = 0.035  # corners darker than the centre by this share
LENS_BLUR = 0.55  # px: renders are sharper than any phone photo
NOISE_SIGMA = 1.6  # sensor noise, per channel, in levels
PAD = 4  # px around an object's outline in its crop: room for the edge and its distance transform


@dataclass(frozen=True)
class SampleObject:
    name: str  # what it is ("red ball"); unique within its sample
    color: str  # the lite colour name it gets
    kind: str  # the lite shape kind it gets
    mask: np.ndarray  # bool HxW, read-only


@dataclass(frozen=True)
class RenderedSample:
    image: Image.Image  # RGB
    objects: list[SampleObject]


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    expected: np.ndarray | None  # union truth mask of what it must select; None: it must be no_match


# Outlines: what is inside, in image pixels.


@dataclass(frozen=True)
class _Disc:
    cx: float
    cy: float
    r: float
    wobble: float = 0.0  # share of the radius by which the edge waves (an apple is not a compass circle)

    @property
    def box(self) -> tuple[float, float, float, float]:
        reach = self.r * (1 + self.wobble)
        return self.cx - reach, self.cy - reach, self.cx + reach, self.cy + reach

    def _radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.r * (1 + self.wobble * np.sin(5 * np.arctan2(y - self.cy, x - self.cx) + 0.7))

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.hypot(x - self.cx, y - self.cy) < self._radius(x, y)

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the ball (or near-ball) with this outline, 0 outside."""
        radius = self._radius(x, y)
        return radius * np.sqrt(np.clip(1 - (np.hypot(x - self.cx, y - self.cy) / radius) ** 2, 0, None))


@dataclass(frozen=True)
class _Oval:
    cx: float
    cy: float
    rx: float
    ry: float
    taper: float = 0.5  # 0.5 is an ellipse; more narrows the ends along the long axis (a lemon)
    tip: float = 0.0  # length of a small knob at each end (a lemon's), as a share of the long radius

    @property
    def box(self) -> tuple[float, float, float, float]:
        grow_x, grow_y = (1 + self.tip, 1.0) if self.rx >= self.ry else (1.0, 1 + self.tip)
        return (
            self.cx - self.rx * grow_x,
            self.cy - self.ry * grow_y,
            self.cx + self.rx * grow_x,
            self.cy + self.ry * grow_y,
        )

    def _axes(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position along and across the long axis (in radii), and the half-width there."""
        along, across = (x - self.cx) / self.rx, (y - self.cy) / self.ry
        if self.ry > self.rx:
            along, across = across, along
        width = np.clip(1 - along**2, 0, None) ** self.taper
        if self.tip:
            knob = 0.15 * np.clip((1 + self.tip - np.abs(along)) / self.tip, 0, 1) ** 0.6
            width = np.maximum(width, knob)
        return along, across, width

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        _, across, width = self._axes(x, y)
        return np.abs(across) < width

    def dome(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the body of revolution about the long axis with this outline, 0 outside."""
        _, across, width = self._axes(x, y)
        return min(self.rx, self.ry) * np.sqrt(np.clip(width**2 - across**2, 0, None))


@dataclass(frozen=True)
class _RoundedBox:
    x0: float
    y0: float
    x1: float
    y1: float
    radius: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        half_w, half_h = (self.x1 - self.x0) / 2 - self.radius, (self.y1 - self.y0) / 2 - self.radius
        qx = np.abs(x - (self.x0 + self.x1) / 2) - half_w
        qy = np.abs(y - (self.y0 + self.y1) / 2) - half_h
        return (
            np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) < self.radius
        )


@dataclass(frozen=True)
class _Polygon:
    points: tuple[tuple[float, float], ...]  # convex, either winding

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.points, strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        sides = []
        for (ax, ay), (bx, by) in zip(self.points, self.points[1:] + self.points[:1], strict=True):
            sides.append((bx - ax) * (y - ay) - (by - ay) * (x - ax))
        return np.logical_and.reduce([s > 0 for s in sides]) | np.logical_and.reduce([s < 0 for s in sides])


_Outline = _Disc | _Oval | _RoundedBox | _Polygon


@dataclass(frozen=True)
class _Thing:
    name: str
    color: str  # lite's name for it, checked by the tests
    kind: str
    outline: _Outline
    rgb: tuple[int, int, int]  # base colour under flat, full light
    finish: str  # key of _FINISHES: how the surface is shaped and textured
    lift: float  # px it stands above the table, for its shadow


@dataclass(frozen=True)
class _Scene:
    title: str
    width: int
    height: int
    table: str  # key of _TABLES
    things: tuple[_Thing, ...]
    prompts: tuple[tuple[str, tuple[str, ...] | None], ...]  # prompt -> names it selects, None: no_match
    seed: int


@dataclass(frozen=True)
class _Grid:
    """Supersampled pixel centres of one object's crop; ``left``/``top``/``cols``/``rows`` in image px."""

    left: int
    top: int
    cols: int
    rows: int
    x: np.ndarray
    y: np.ndarray


@dataclass
class _Surface:
    height: np.ndarray  # px above the table top, supersampled
    albedo: np.ndarray  # HxWx3, 0..255, supersampled
    gloss: float = 0.1  # strength of the highlight
    shininess: float = 20.0  # tightness of the highlight


def _grid(outline: _Outline) -> _Grid:
    x0, y0, x1, y1 = outline.box
    left, top = math.floor(x0) - PAD, math.floor(y0) - PAD
    cols, rows = math.ceil(x1) + PAD - left, math.ceil(y1) + PAD - top
    # float32 throughout: the shading math runs on millions of supersampled pixels.
    steps = (np.arange(SUPERSAMPLE * max(cols, rows), dtype=np.float32) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(left + steps[: cols * SUPERSAMPLE], top + steps[: rows * SUPERSAMPLE])
    return _Grid(left, top, cols, rows, x, y)


def _smooth_noise(
    shape: tuple[int, int], sigma: float | tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` (in array cells, per axis), rescaled to unit standard
    deviation. Wide blurs are made on a coarser grid and scaled up: the same look, far fewer taps."""
    sigmas = (sigma, sigma) if isinstance(sigma, int | float) else sigma
    steps = [max(1, int(s // 3)) for s in sigmas]
    coarse = [-(-n // k) + 1 for n, k in zip(shape, steps, strict=True)]
    field = ndimage.gaussian_filter(
        rng.standard_normal(coarse), [s / k for s, k in zip(sigmas, steps, strict=True)], mode="wrap"
    )
    field = ndimage.zoom(field, steps, order=1)[: shape[0], : shape[1]]
    return np.asarray(field / field.std(), dtype=np.float32)


def _body(thing: _Thing, grid: _Grid, flatten: float = 1.0) -> np.ndarray:
    """The rounded body (ball, fruit) that ``thing``'s outline bounds, as a height."""
    if not isinstance(thing.outline, _Disc | _Oval):
        raise TypeError(f"{thing.name} has no rounded outline to make a body of")
    return flatten * thing.outline.dome(grid.x, grid.y)


def _slab(depth: np.ndarray, bevel: float) -> np.ndarray:
    """A flat top whose edge is rounded over ``bevel`` px."""
    t = np.clip(depth / bevel, 0, 1)
    return bevel * (1 - (1 - t) ** 2)


def _flat(grid: _Grid, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.float32), (*grid.x.shape, 3)).copy()


def _tint(albedo: np.ndarray, where: np.ndarray, rgb: Sequence[float]) -> np.ndarray:
    """Paint ``rgb`` over ``albedo`` with coverage ``where`` (0..1)."""
    return albedo * (1 - where[..., None]) + np.asarray(rgb, dtype=np.float32) * where[..., None]


def _soft_disc(grid: _Grid, cx: float, cy: float, r: float, edge: float = 0.7) -> np.ndarray:
    """Coverage of a disc whose edge fades over ``edge`` px."""
    return np.clip((r - np.hypot(grid.x - cx, grid.y - cy)) / edge + 0.5, 0, 1)


def _strokes(grid: _Grid, lines: Sequence[Sequence[tuple[float, float]]], width: float) -> np.ndarray:
    """Coverage of polylines (image px) drawn ``width`` px wide, antialiased by the supersampling."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (grid.cols * s, grid.rows * s), 0)
    draw = ImageDraw.Draw(canvas)
    for line in lines:
        points = [((x - grid.left) * s, (y - grid.top) * s) for x, y in line]
        draw.line(points, fill=255, width=round(width * s), joint="curve")
    return np.asarray(canvas, dtype=np.float32) / 255


# Finishes: each shapes and paints one kind of object, given its crop and the distance in from its edge.
Finish = Callable[[_Thing, _Grid, np.ndarray, np.random.Generator], _Surface]


def _rubber_ball(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A glossy rubber ball with a faint moulding seam round a tilted great circle."""
    cx, cy = _center(thing.outline)
    height = _body(thing, grid)
    radius = (thing.outline.box[2] - thing.outline.box[0]) / 2
    ax, ay, az = (v / math.hypot(0.45, 0.35, 0.82) for v in (0.45, -0.35, 0.82))  # the seam's axis
    tilt = ((grid.x - cx) * ax + (grid.y - cy) * ay + height * az) / radius
    seam = np.exp(-((tilt / 0.025) ** 2)) * (height > 0)
    albedo = _flat(grid, thing.rgb) * (1 - 0.15 * seam)[..., None]
    return _Surface(height - 0.4 * seam, albedo, gloss=0.45, shininess=60)


BRICK_PITCH = 48.0  # px between stud centres: a toy brick's studs sit on this grid
STUD_RADIUS = 14.0
STUD_HEIGHT = 3.0


def _brick(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A plastic building brick seen from above: rounded edges and a grid of studs, each casting a small
    shadow onto the top towards the bottom right."""
    x0, y0, x1, y1 = thing.outline.box
    height = _slab(depth, 2.5)
    shade = np.ones(grid.x.shape, dtype=np.float32)
    for cy in np.arange(y0 + BRICK_PITCH / 2, y1, BRICK_PITCH).tolist():
        for cx in np.arange(x0 + BRICK_PITCH / 2, x1, BRICK_PITCH).tolist():
            distance = np.hypot(grid.x - cx, grid.y - cy)
            height = height + STUD_HEIGHT * np.clip((STUD_RADIUS - distance) / 1.5, 0, 1) ** 0.5
            cast = _soft_disc(grid, cx + 3.5, cy + 4.5, STUD_RADIUS, edge=3.0)
            shade *= 1 - 0.2 * cast * (distance > STUD_RADIUS)
    return _Surface(height, _flat(grid, thing.rgb) * shade[..., None], gloss=0.3, shininess=40)


def _wood_block(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A painted wooden block: the grain shows through the paint as faint wavy lines."""
    warp = 4 * np.sin(grid.x / 31 + 0.4) + 1.5 * np.sin(grid.x / 11)
    grain = np.sin((grid.y + warp) / 4.5) ** 8
    albedo = _flat(grid, thing.rgb) * (1 - 0.06 * grain)[..., None]
    return _Surface(_slab(depth, 4.0) - 0.3 * grain, albedo, gloss=0.1, shininess=12)


def _peel(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """Citrus: a finely dimpled peel, a little blotchy, a dry spot where the stem was, a dull shine."""
    cx, cy = _center(thing.outline)
    dimples = _smooth_noise(grid.x.shape, 0.9 * SUPERSAMPLE, rng)
    blotches = _smooth_noise(grid.x.shape, 6 * SUPERSAMPLE, rng)
    albedo = _flat(grid, thing.rgb) * (1 + 0.035 * blotches)[..., None]
    stem = _soft_disc(grid, cx + 3, cy - 4, 3.0, edge=1.5)
    albedo = _tint(albedo, 0.8 * stem, (110, 105, 40))
    return _Surface(_body(thing, grid, 0.95) + 0.1 * dimples, albedo, gloss=0.22, shininess=16)


def _apple(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """An apple from above: faint streaks from the stem, a hollow round the stem, a waxy shine."""
    cx, cy = _center(thing.outline)
    angle = np.arctan2(grid.y - cy, grid.x - cx)
    distance = np.hypot(grid.x - cx, grid.y - cy)
    around = _smooth_noise((1, 720), (0, 3), rng)[0]
    streaks = around[((angle + math.pi) / (2 * math.pi) * 719).astype(int)]
    fade = np.clip((distance - 8) / 25, 0, 1) * np.clip((depth - 1) / 10, 0, 1)
    blush = _smooth_noise(grid.x.shape, 7 * SUPERSAMPLE, rng)
    albedo = _tint(_flat(grid, thing.rgb), 0.3 * np.clip(blush, 0, 1), (225, 55, 45))
    albedo *= (1 + 0.035 * streaks * fade)[..., None]
    # Lenticels: the skin's tiny pale dots.
    dots = np.zeros(grid.x.shape, dtype=np.float32)
    dots.flat[rng.choice(dots.size, 90, replace=False)] = 1
    dots = ndimage.gaussian_filter(dots, 0.5 * SUPERSAMPLE)
    albedo = _tint(albedo, 0.45 * np.clip(dots / dots.max(), 0, 1), (230, 185, 150))
    hollow = 7 * np.exp(-((distance / 15) ** 2))
    stem = _strokes(grid, [[(cx, cy), (cx + 5, cy - 3), (cx + 10, cy - 4)]], 2.4)
    albedo = _tint(albedo, stem, (95, 62, 32))
    return _Surface(_body(thing, grid, 0.9) - hollow + 4 * stem, albedo, gloss=0.35, shininess=30)


def _plum(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A plum: a pale waxy bloom in patches over dark skin, and the crease along one side."""
    cx, cy = _center(thing.outline)
    x0, y0, x1, y1 = thing.outline.box
    along, across = (grid.y - cy) / ((y1 - y0) / 2), (grid.x - cx) / ((x1 - x0) / 2)
    crease = np.exp(-(((across - 0.4 * np.sqrt(np.clip(1 - along**2, 0, None))) / 0.05) ** 2))
    bloom = np.clip(_smooth_noise(grid.x.shape, 4 * SUPERSAMPLE, rng) * 0.5 + 0.3, 0, 1)
    albedo = _tint(_flat(grid, thing.rgb), 0.2 * bloom, (175, 160, 195)) * (1 - 0.1 * crease)[..., None]
    return _Surface(_body(thing, grid, 0.9) - 1.5 * crease, albedo, gloss=0.2, shininess=14)


def _cup(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A glazed cup seen from above: a rounded rim, and inside, walls lit on the far side and the rim's
    shadow on the near one. No handle: it would make the outline a blob to lite."""
    cx, cy = _center(thing.outline)
    rim, wall, deep = 6.0, 9.0, 45.0
    inner = np.clip((depth - rim) / wall, 0, 1)
    height = _slab(np.minimum(depth, rim), rim / 2) - deep * inner**0.6
    # A point down in the cup sees the lamp past the rim only if the ray towards it leaves the opening.
    rise = np.clip(-height, 0, None) / LIGHT[2]
    opening = thing.outline.box[2] - cx - rim
    lit = np.hypot(grid.x + rise * LIGHT[0] - cx, grid.y + rise * LIGHT[1] - cy) < opening
    in_shadow = ndimage.gaussian_filter((~lit & (inner > 0)).astype(np.float32), 1.5 * SUPERSAMPLE)
    albedo = _flat(grid, thing.rgb) * ((1 - 0.25 * inner) * (1 - 0.4 * in_shadow))[..., None]
    return _Surface(height, albedo, gloss=0.5, shininess=70)


def _notebook(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A hardback notebook: a grained cover, a darker spine and an elastic band across it."""
    x0, _, x1, _ = thing.outline.box
    grain = _smooth_noise(grid.x.shape, 0.8 * SUPERSAMPLE, rng)
    albedo = _flat(grid, thing.rgb) * (1 + 0.025 * grain)[..., None]
    spine = np.clip((x0 + 14 - grid.x) / 1.5, 0, 1)
    albedo *= (1 - 0.2 * spine)[..., None]
    band = np.clip(2.5 - np.abs(grid.x - (x1 - 26)), 0, 1)
    albedo = _tint(albedo, band, (35, 35, 38))
    hinge = np.clip(1 - np.abs(grid.x - x0 - 14) / 1.2, 0, 1)
    return _Surface(_slab(depth, 3.0) + 1.2 * band - 0.8 * hinge, albedo, gloss=0.12, shininess=10)


def _phone(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A phone face up: a black glass screen that catches a broad sheen, a thin frame, a front camera."""
    x0, y0, x1, _ = thing.outline.box
    frame = np.clip((5.0 - depth) / 1.0, 0, 1)
    sheen = np.clip(1 - np.abs((grid.x - x0) + 0.6 * (grid.y - y0) - 70) / 35, 0, 1)
    albedo = _flat(grid, thing.rgb) + (18 * sheen * (1 - frame))[..., None]
    albedo = _tint(albedo, 0.6 * frame, (60, 60, 65))
    camera = _soft_disc(grid, (x0 + x1) / 2, y0 + 11, 2.6)
    albedo = _tint(albedo, camera, (5, 5, 8))
    return _Surface(_slab(depth, 3.5), albedo, gloss=0.4, shininess=120)


def _sticky_notes(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A pad of sticky notes: paper grain, the sheets' edges along the sides, the top sheet's free end
    curling up, and two lines of handwriting in blue ink."""
    x0, y0, _, y1 = thing.outline.box
    grain = _smooth_noise(grid.x.shape, 0.7 * SUPERSAMPLE, rng)
    albedo = _flat(grid, thing.rgb) * (1 + 0.015 * grain)[..., None]
    layers = np.clip(2.5 - depth, 0, 1) * (0.5 + 0.5 * np.sin(depth * 9))
    albedo *= (1 - 0.06 * layers)[..., None]
    curl = 5 * np.clip((grid.y - (y1 - 35)) / 35, 0, 1) ** 2
    # Handwriting: loops of a prolate cycloid, letter heights varying a little.
    lines = []
    for baseline, length in ((y0 + 40, 66.0), (y0 + 62, 48.0)):
        theta = np.linspace(0, length / 1.7, 400)
        loop = 3.4 + 1.2 * np.sin(theta / 3.1 + baseline)
        xs = x0 + 22 + 1.7 * theta - 1.2 * loop * np.sin(theta)
        ys = baseline - loop * np.cos(theta) + 0.6 * np.sin(theta / 5)
        lines.append(list(zip(xs.tolist(), ys.tolist(), strict=True)))
    ink = _strokes(grid, lines, 1.1)
    albedo = _tint(albedo, 0.85 * ink, (40, 60, 150))
    return _Surface(_slab(depth, 1.5) + curl, albedo, gloss=0.04, shininess=8)


def _set_square(thing: _Thing, grid: _Grid, depth: np.ndarray, rng: np.random.Generator) -> _Surface:
    """A plastic set square with millimetre ticks along its two straight legs."""
    if not isinstance(thing.outline, _Polygon):
        raise TypeError(f"a set square is a right triangle, not {thing.outline}")
    ax, ay = thing.outline.points[0]  # the right-angle corner
    along_x, along_y = grid.x - ax, ay - grid.y  # from that corner along each leg
    ticks = np.zeros(grid.x.shape, dtype=np.float32)
    for along, across in ((along_x, along_y), (along_y, along_x)):
        long_tick = np.mod(along, 30.0) < 1.0
        on_tick = (
            (np.mod(along, 6.0) < 0.9) & (across > 2) & (across < np.where(long_tick, 11, 6)) & (along > 4)
        )
        ticks = np.maximum(ticks, on_tick.astype(np.float32))
    albedo = _tint(_flat(grid, thing.rgb), 0.7 * ticks, (10, 70, 80))
    return _Surface(_slab(depth, 2.0), albedo, gloss=0.45, shininess=90)


_FINISHES: dict[str, Finish] = {
    "rubber ball": _rubber_ball,
    "brick": _brick,
    "wood block": _wood_block,
    "peel": _peel,
    "apple": _apple,
    "plum": _plum,
    "cup": _cup,
    "notebook": _notebook,
    "phone": _phone,
    "sticky notes": _sticky_notes,
    "set square": _set_square,
}


def _center(outline: _Outline) -> tuple[float, float]:
    x0, y0, x1, y1 = outline.box
    return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class _Layer:
    """One shaded object, averaged down to image pixels within its crop."""

    grid: _Grid
    cover: np.ndarray  # share of each pixel the object covers, 0..1
    color: np.ndarray  # HxWx3, the object's colour times its cover


def _shade(surface: _Surface, inside: np.ndarray) -> np.ndarray:
    """Lambert shading plus a white highlight, normalised so a flat top shows its albedo."""
    dy, dx = np.gradient(surface.height, 1 / SUPERSAMPLE)
    norm = np.sqrt(dx**2 + dy**2 + 1)
    normal = (-dx / norm, -dy / norm, 1 / norm)
    lambert = np.clip(sum(n * light for n, light in zip(normal, LIGHT, strict=True)), 0, 1)
    shade = (AMBIENT + (1 - AMBIENT) * lambert) / (AMBIENT + (1 - AMBIENT) * LIGHT[2])
    facing = np.clip(sum(n * h for n, h in zip(normal, HALFWAY, strict=True)), 0, 1)
    highlight = surface.gloss * facing**surface.shininess
    color = np.clip(surface.albedo * shade[..., None], 0, 255)
    color += (255 - color) * highlight[..., None]
    return np.asarray(color * inside[..., None], dtype=np.float32)


def _down(values: np.ndarray, grid: _Grid) -> np.ndarray:
    """Average supersampled values to image pixels."""
    s = SUPERSAMPLE
    return np.asarray(values.reshape(grid.rows, s, grid.cols, s, *values.shape[2:]).mean(axis=(1, 3)))


def _layer(thing: _Thing, rng: np.random.Generator) -> _Layer:
    grid = _grid(thing.outline)
    inside = thing.outline.inside(grid.x, grid.y)
    depth = (ndimage.distance_transform_edt(inside) / SUPERSAMPLE).astype(np.float32)
    surface = _FINISHES[thing.finish](thing, grid, depth, rng)
    color = _shade(surface, inside)
    return _Layer(grid, _down(inside.astype(np.float32), grid), _down(color, grid))


# Tables: the backdrop, before light falloff and shadows.


def _maple(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Pale maple boards: long grain lines, wavy, faint, and one seam between two boards."""
    y = np.mgrid[0:height, 0:width][0].astype(np.float32)
    warp = 6 * _smooth_noise((height, width), (25, 120), rng)
    rings = np.sin((y + warp) / 3.1) ** 2
    streaks = _smooth_noise((height, width), (1.5, 60), rng)
    seam = np.exp(-(((y - 0.62 * height) / 0.8) ** 2))
    level = 1 - 0.012 * rings - 0.01 * streaks - 0.035 * seam
    return np.array([226, 211, 188], dtype=np.float32) * level[..., None]


def _linen(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Cream linen: an uneven weave of threads slightly thicker here and there."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    slub_x = _smooth_noise((1, width), (0, 3), rng)
    slub_y = _smooth_noise((height, 1), (3, 0), rng)
    weave = 0.005 * (
        (1 + 0.5 * np.tanh(slub_x)) * np.cos(x * 1.3) + (1 + 0.5 * np.tanh(slub_y)) * np.cos(y * 1.3)
    )
    mottle = _smooth_noise((height, width), 30, rng)
    level = 1 + weave + 0.006 * mottle
    return np.array([236, 230, 216], dtype=np.float32) * level[..., None]


def _desk_mat(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A pale grey desk mat with a fine felt-like grain."""
    grain = _smooth_noise((height, width), 1.0, rng)
    mottle = _smooth_noise((height, width), 40, rng)
    level = 1 + 0.006 * grain + 0.008 * mottle
    return np.array([222, 224, 226], dtype=np.float32) * level[..., None]


_TABLES: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "maple": _maple,
    "linen": _linen,
    "desk mat": _desk_mat,
}


def _room_light(width: int, height: int) -> np.ndarray:
    """Brightness over the table: falling off away from the lamp (top left) and towards the corners."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (x + 0.5) / width - 0.5, (y + 0.5) / height - 0.5
    falloff = LIGHT_FALLOFF * (u + v)
    corners = VIGNETTE * (u**2 + v**2) / 0.5
    return np.asarray(1 - falloff - corners, dtype=np.float32)


def _shadows(layers: Sequence[_Layer], lifts: Sequence[float], width: int, height: int) -> np.ndarray:
    """How much of the light each table pixel keeps: each object casts a shadow away from the lamp, as
    long as it is tall and softer the taller it is, and darkens the table right at its foot."""
    darkness = np.zeros((height, width), dtype=np.float32)
    away = -LIGHT[1::-1] / LIGHT[2]  # (rows, cols) offset of a shadow per px of height
    for layer, lift in zip(layers, lifts, strict=True):
        blur = 1.0 + 0.15 * lift
        # Work in a window that holds the object, its shadow and the shadow's blur.
        g, reach = layer.grid, math.ceil(4 * blur + 8)
        top, left = max(g.top - reach, 0), max(g.left - reach, 0)
        bottom = min(g.top + g.rows + math.ceil(lift * away[0]) + reach, height)
        right = min(g.left + g.cols + math.ceil(lift * away[1]) + reach, width)
        cover = np.zeros((bottom - top, right - left), dtype=np.float32)
        cover[g.top - top : g.top - top + g.rows, g.left - left : g.left - left + g.cols] = layer.cover
        cast = cover.copy()
        for step in np.linspace(0, 1, 9)[1:]:
            cast = np.maximum(cast, (1 - 0.5 * step) * ndimage.shift(cover, step * lift * away, order=1))
        window = darkness[top:bottom, left:right]
        window += SHADOW_STRENGTH * ndimage.gaussian_filter(cast, blur, mode="constant")
        window += CONTACT_STRENGTH * ndimage.gaussian_filter(cover, 2.0, mode="constant")
    # Saturate rather than add up where shadows meet, so no shadow ever reaches lite's threshold.
    return np.asarray(1 - MAX_SHADOW * np.tanh(darkness / MAX_SHADOW), dtype=np.float32)


def _render(scene: _Scene) -> RenderedSample:
    rng = np.random.default_rng(scene.seed)
    width, height = scene.width, scene.height
    layers = [_layer(thing, rng) for thing in scene.things]
    table = _TABLES[scene.table](width, height, rng) * _room_light(width, height)[..., None]
    table *= _shadows(layers, [t.lift for t in scene.things], width, height)[..., None]
    canvas = table
    objects = []
    for thing, layer in zip(scene.things, layers, strict=True):
        g = layer.grid
        crop = canvas[g.top : g.top + g.rows, g.left : g.left + g.cols]
        crop *= 1 - layer.cover[..., None]
        crop += layer.color
        mask = np.zeros((height, width), dtype=bool)
        mask[g.top : g.top + g.rows, g.left : g.left + g.cols] = layer.cover >= 0.5
        mask.flags.writeable = False
        objects.append(SampleObject(thing.name, thing.color, thing.kind, mask))
    canvas = ndimage.gaussian_filter(canvas, (LENS_BLUR, LENS_BLUR, 0))
    # Sensor noise: mostly in brightness, some in colour.
    canvas += rng.normal(0, NOISE_SIGMA, (height, width, 1)) + rng.normal(0, NOISE_SIGMA / 2, canvas.shape)
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    return RenderedSample(image, objects)


_SCENES: dict[str, _Scene] = {
    "toys": _Scene(
        title="Toys on a table",
        width=640,
        height=480,
        table="maple",
        things=(
            _Thing("purple ball", "purple", "circle", _Disc(100, 360, 40), (120, 55, 175), "rubber ball", 40),
            _Thing("red ball", "red", "circle", _Disc(488, 132, 66), (215, 35, 35), "rubber ball", 66),
            _Thing(
                "blue brick", "blue", "square", _RoundedBox(282, 74, 378, 170, 3), (35, 80, 205), "brick", 34
            ),
            _Thing(
                "yellow brick",
                "yellow",
                "bar",
                _RoundedBox(344, 300, 536, 396, 3),
                (245, 200, 35),
                "brick",
                34,
            ),
            _Thing(
                "green block",
                "green",
                "triangle",
                _Polygon(((100, 226), (260, 226), (180, 76))),
                (45, 160, 70),
                "wood block",
                40,
            ),
        ),
        prompts=(
            ("red ball", ("red ball",)),
            ("left ball", ("purple ball",)),
            ("largest ball", ("red ball",)),
            ("blue square", ("blue brick",)),
            ("yellow rectangle", ("yellow brick",)),
            ("green triangle", ("green block",)),
            ("balls", ("purple ball", "red ball")),
            ("second object from the left", ("green block",)),
            ("teddy bear", None),
        ),
        seed=1,
    ),
    "fruit": _Scene(
        title="Fruit on a linen cloth",
        width=640,
        height=480,
        table="linen",
        things=(
            _Thing("orange", "orange", "circle", _Disc(196, 158, 74), (240, 135, 25), "peel", 74),
            _Thing("apple", "red", "circle", _Disc(452, 138, 60, wobble=0.008), (185, 25, 35), "apple", 60),
            _Thing("lime", "green", "circle", _Disc(516, 346, 40), (90, 165, 45), "peel", 40),
            _Thing(
                "lemon",
                "yellow",
                "ellipse",
                _Oval(166, 370, 78, 54, taper=0.62, tip=0.08),
                (245, 212, 50),
                "peel",
                54,
            ),
            _Thing("plum", "purple", "ellipse", _Oval(360, 352, 40, 56), (95, 40, 125), "plum", 40),
        ),
        prompts=(
            ("yellow oval", ("lemon",)),
            ("orange", ("orange",)),
            ("largest circle", ("orange",)),
            ("smallest circle", ("lime",)),
            ("red circle", ("apple",)),
            ("purple oval", ("plum",)),
            ("circles", ("orange", "apple", "lime")),
            ("banana", None),
        ),
        seed=2,
    ),
    "desk": _Scene(
        title="Things on a desk",
        width=640,
        height=480,
        table="desk mat",
        things=(
            _Thing(
                "notebook", "green", "bar", _RoundedBox(48, 70, 248, 400, 6), (40, 130, 80), "notebook", 14
            ),
            _Thing("phone", "black", "bar", _RoundedBox(500, 244, 580, 410, 12), (28, 28, 32), "phone", 9),
            _Thing(
                "sticky notes",
                "yellow",
                "square",
                _RoundedBox(300, 56, 420, 176, 2),
                (248, 222, 70),
                "sticky notes",
                6,
            ),
            _Thing("cup", "blue", "circle", _Disc(366, 318, 62), (40, 95, 200), "cup", 80),
            _Thing(
                "set square",
                "cyan",
                "triangle",
                _Polygon(((470, 200), (470, 50), (616, 200))),
                (30, 185, 195),
                "set square",
                3,
            ),
        ),
        prompts=(
            ("largest rectangle", ("notebook",)),
            ("black bar", ("phone",)),
            ("yellow square", ("sticky notes",)),
            ("blue circle", ("cup",)),
            ("cyan triangle", ("set square",)),
            ("right bar", ("phone",)),
            ("bars", ("notebook", "phone")),
            ("left shoe", None),
        ),
        seed=3,
    ),
}


def _scene(name: str) -> _Scene:
    try:
        return _SCENES[name]
    except KeyError:
        raise KeyError(f"unknown sample {name!r}; samples: {', '.join(SAMPLE_NAMES)}") from None


@functools.lru_cache(maxsize=len(SAMPLE_NAMES))
def _rendered(name: str) -> RenderedSample:
    return _render(_scene(name))


def render_sample(name: str) -> RenderedSample:
    """Render sample ``name`` (deterministic). The masks are read-only; the image is the caller's own."""
    rendered = _rendered(name)
    return RenderedSample(rendered.image.copy(), list(rendered.objects))


def sample_prompts(name: str) -> list[SamplePrompt]:
    """The prompts shown with sample ``name``, each with the union truth mask of what it must select
    (None: lite must answer no_match). The first is the sample's headline prompt."""
    masks = {obj.name: obj.mask for obj in _rendered(name).objects}
    return [
        SamplePrompt(prompt, None if names is None else np.logical_or.reduce([masks[n] for n in names]))
        for prompt, names in _scene(name).prompts
    ]


def sample_truth(name: str, prompt: str) -> np.ndarray | None:
    """The truth mask of one listed prompt of sample ``name``; KeyError for a prompt not listed."""
    for case in sample_prompts(name):
        if case.prompt == prompt:
            return case.expected
    raise KeyError(f"sample {name!r} lists no prompt {prompt!r}")


def write_samples(out_dir: Path) -> None:
    """Write ``<name>.jpg`` for every sample and ``index.json`` describing them into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in SAMPLE_NAMES:
        scene = _scene(name)
        render_sample(name).image.save(out_dir / f"{name}.jpg", "JPEG", quality=JPEG_QUALITY, optimize=True)
        entries.append(
            {
                "name": name,
                "file": f"{name}.jpg",
                "title": scene.title,
                "width": scene.width,
                "height": scene.height,
                "prompts": [prompt for prompt, _ in scene.prompts],
                "licence": LICENCE,
            }
        )
    (out_dir / "index.json").write_text(json.dumps({"samples": entries}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the sample images and their index.json.")
    parser.add_argument("out_dir", type=Path, help="folder to write into, e.g. api/static/samples")
    write_samples(parser.parse_args(argv).out_dir)


if __name__ == "__main__":
    main()
