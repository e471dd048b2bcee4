"""Mask output formats: PNG, COCO compressed RLE, polygons and RGBA cutouts, plus decoders for round trips.

Polygon coordinates are pixel-edge coordinates: pixel (col, row) covers [col, col + 1] x [row, row + 1], as in
SVG, canvas and COCO, so a polygon traces the exact outline of its pixels and filling it (sampling pixel
centres) gives the mask back unchanged.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

PNG_CONTENT_TYPE = "image/png"
JSON_CONTENT_TYPE = "application/json"
MASK_FORMATS = ("png", "rle", "polygon", "cutout")

_SUFFIXES = {"png": ".png", "rle": ".rle.json", "polygon": ".polygon.json", "cutout": ".cutout.png"}


@dataclass(frozen=True)
class EncodedMask:
    data: bytes
    content_type: str
    suffix: str


def encode_mask(mask: np.ndarray, output_format: str, image: np.ndarray | None = None) -> EncodedMask:
    """Encode a bool HxW mask; `image` (HxWx3 uint8 RGB, same size) is the source, which "cutout" needs."""
    if output_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {output_format!r}; expected one of {', '.join(MASK_FORMATS)}")
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty HxW array, got shape {mask.shape}")
    if image is not None:
        _check_image(mask, image)
    mask = mask.astype(bool, copy=False)
    suffix = _SUFFIXES[output_format]
    if output_format == "cutout":
        if image is None:
            raise ValueError("a cutout needs the source image")
        return EncodedMask(encode_cutout(mask, image), PNG_CONTENT_TYPE, suffix)
    if output_format == "png":
        return EncodedMask(encode_png_mask(mask), PNG_CONTENT_TYPE, suffix)
    if output_format == "rle":
        return EncodedMask(_json_bytes(encode_rle(mask)), JSON_CONTENT_TYPE, suffix)
    return EncodedMask(_json_bytes(encode_polygons(mask)), JSON_CONTENT_TYPE, suffix)


def _check_image(mask: np.ndarray, image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _png_bytes(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False, compress_level=compress_level)
    return buffer.getvalue()


def mask_levels(mask: np.ndarray) -> np.ndarray:
    """A bool mask as uint8 255 inside, 0 outside; made in uint8 (``np.where(mask, 255, 0)`` would make an
    int64 array first: 320 MB for a 40 MP mask)."""
    return np.asarray(mask, dtype=bool).view(np.uint8) * np.uint8(255)


def encode_png_mask(mask: np.ndarray) -> bytes:
    """8-bit greyscale PNG: 255 inside the mask, 0 outside."""
    return _png_bytes(mask_levels(mask))


def encode_cutout(mask: np.ndarray, image: np.ndarray) -> bytes:
    """RGBA PNG of the source image with the mask as alpha (255 inside, 0 outside)."""
    alpha = mask_levels(mask)
    # A photo's RGBA PNG takes ~1 s at zlib's default level and ~0.25 s at level 1, for ~15% more bytes.
    return _png_bytes(np.dstack((image, alpha)), compress_level=1)


# --- COCO compressed RLE -------------------------------------------------------------------------------


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE, byte for byte what pycocotools' `mask.encode` gives, with counts as str."""
    height, width = mask.shape
    return {"size": [height, width], "counts": _counts_to_string(_run_lengths(mask))}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Bool HxW mask from a COCO RLE document (compressed string counts, or a plain list of counts)."""
    height, width = (int(side) for side in rle["size"])
    counts_field = rle["counts"]
    if isinstance(counts_field, list):
        counts = np.asarray(counts_field, dtype=np.int64)
    else:
        if isinstance(counts_field, bytes):
            counts_field = counts_field.decode("ascii")
        counts = _string_to_counts(counts_field)
    if (counts.size and counts.min() < 0) or int(counts.sum()) != height * width:
        raise ValueError(f"RLE counts do not cover a {height}x{width} mask")
    # Runs alternate zeros, ones, zeros, ... in column-major order.
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy()


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(edges).astype(np.int64)
    if flat[0]:
        counts = np.concatenate(([0], counts))  # counts always start with a (possibly empty) run of zeros
    return counts


def _counts_to_string(counts: np.ndarray) -> str:
    """pycocotools' rleToString: delta-code counts two back, then 5-bit groups with a continuation bit."""
    values = counts.astype(np.int64).copy()
    values[3:] -= counts[1:-2]  # pycocotools deltas from index 3 (`i > 2`), not 2
    # Each value becomes little-endian 5-bit groups; the last one's bit 0x10 carries the sign.
    group_rows: list[np.ndarray] = []
    more_rows: list[np.ndarray] = []
    active = np.ones(values.size, dtype=bool)
    remaining = values
    while active.any():
        group = remaining & 0x1F
        remaining = remaining >> 5  # arithmetic shift, as in C on signed longs
        more = np.where(group & 0x10, remaining != -1, remaining != 0) & active
        group_rows.append(np.where(more, group | 0x20, group) + 48)
        more_rows.append(active)
        active = more
    groups = np.stack(group_rows, axis=1)  # one row per count, groups in emission order
    emitted = np.stack(more_rows, axis=1)
    return groups[emitted].astype(np.uint8).tobytes().decode("ascii")


def _string_to_counts(text: str) -> np.ndarray:
    """Inverse of `_counts_to_string` (pycocotools' rleFrString)."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20:
        raise ValueError("malformed compressed RLE string")
    ends = np.flatnonzero((codes & 0x20) == 0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    owner = np.repeat(np.arange(ends.size), ends - starts + 1)
    position = np.arange(codes.size) - starts[owner]
    if position.max() > 11:  # 12 groups already hold 60 bits; more would overflow int64
        raise ValueError("malformed compressed RLE string: count too large")
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, owner, (codes & 0x1F) << (5 * position))
    negative = (codes[ends] & 0x10) != 0
    values[negative] |= -1 << (5 * (ends[negative] - starts[negative] + 1))
    # Undo the delta coding: from index 3 on each count is relative to the one two before it.
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts


# --- polygons -----------------------------------------------------------------------------------------


def encode_polygons(mask: np.ndarray) -> dict[str, Any]:
    """One polygon per 8-connected component, with its holes, tracing the pixels' outer edges exactly."""
    height, width = mask.shape
    # Trace a 2x upscaled, zero-padded copy: a 1-pixel-wide part becomes 2 wide, so cv2's contours through
    # boundary pixel centres never collapse, and every traced point maps onto a pixel corner (_corner_rings).
    doubled = np.zeros((2 * height + 2, 2 * width + 2), dtype=np.uint8)
    for row_offset in (1, 2):
        for col_offset in (1, 2):
            doubled[row_offset : row_offset + 2 * height : 2, col_offset : col_offset + 2 * width : 2] = mask
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[dict[str, Any]] = []
    if hierarchy is None:
        return {"width": width, "height": height, "polygons": polygons}
    rings = _corner_rings(contours)
    links = hierarchy[0]
    # RETR_CCOMP: top-level contours are component outlines, their children are the holes in them.
    for index in np.flatnonzero(links[:, 3] == -1).tolist():
        holes = []
        child = int(links[index, 2])
        while child != -1:
            holes.append(rings[child])
            child = int(links[child, 0])
        polygons.append({"exterior": rings[index], "holes": holes})
    return {"width": width, "height": height, "polygons": polygons}


def _corner_rings(contours: Sequence[np.ndarray]) -> list[list[list[int]]]:
    """Map doubled, padded image contours to pixel-corner rings of the original, less redundant points.

    Doubled index d (after removing the pad) is the left/top half of pixel d // 2 when even, whose outer
    edge is corner d // 2, and the right/bottom half when odd, whose outer edge is corner d // 2 + 1: both
    are (d + 1) // 2, i.e. padded // 2. Holes are traced along the foreground around them, so the same rule
    holds. All rings are processed at once: a noisy mask has hundreds of thousands of them.
    """
    lengths = np.array([len(contour) for contour in contours], dtype=np.int64)
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64) // 2
    ring_of = np.repeat(np.arange(lengths.size), lengths)

    repeated = np.all(points == points[_previous_in_ring(lengths)], axis=1)
    points, ring_of, lengths = _drop_points(points, ring_of, lengths, repeated)

    incoming = points - points[_previous_in_ring(lengths)]
    outgoing = points[_next_in_ring(lengths)] - points
    cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
    straight = (cross == 0) & (np.sum(incoming * outgoing, axis=1) > 0)
    points, ring_of, lengths = _drop_points(points, ring_of, lengths, straight)

    coordinates = points.tolist()
    offsets = np.concatenate(([0], np.cumsum(lengths))).tolist()
    return [coordinates[offsets[ring] : offsets[ring + 1]] for ring in range(lengths.size)]


def _drop_points(
    points: np.ndarray, ring_of: np.ndarray, lengths: np.ndarray, drop: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove the `drop` points, but keep each ring's first point if all of it would go."""
    keep = ~drop
    emptied = np.bincount(ring_of[keep], minlength=lengths.size) == 0
    keep[(np.cumsum(lengths) - lengths)[emptied]] = True
    ring_of = ring_of[keep]
    return points[keep], ring_of, np.bincount(ring_of, minlength=lengths.size)


def _previous_in_ring(lengths: np.ndarray) -> np.ndarray:
    """Index of each point's predecessor in concatenated closed rings of these (non-zero) lengths."""
    starts = np.cumsum(lengths) - lengths
    previous = np.arange(int(lengths.sum())) - 1
    previous[starts] = starts + lengths - 1
    return previous


def _next_in_ring(lengths: np.ndarray) -> np.ndarray:
    starts = np.cumsum(lengths) - lengths
    following = np.arange(int(lengths.sum())) + 1
    following[starts + lengths - 1] = starts
    return following


def rasterize_polygons(doc: dict[str, Any]) -> np.ndarray:
    """Bool HxW mask from a polygon document: each exterior filled, its holes cut, components OR-ed.

    A pixel is inside a ring when its centre is (even-odd rule), so exact pixel outlines fill back exactly.
    """
    height, width = int(doc["height"]), int(doc["width"])
    mask = np.zeros((height, width), dtype=bool)
    for polygon in doc["polygons"]:
        rings = [np.asarray(polygon["exterior"], dtype=np.float64).reshape(-1, 2)]
        rings += [np.asarray(hole, dtype=np.float64).reshape(-1, 2) for hole in polygon.get("holes", [])]
        rings = [ring for ring in rings if len(ring) >= 3]
        if not rings:
            continue
        # Work in the exterior's bounding box only: documents can have thousands of small components.
        exterior = rings[0]
        top = max(int(np.floor(exterior[:, 1].min())), 0)
        bottom = min(int(np.ceil(exterior[:, 1].max())), height)
        left = max(int(np.floor(exterior[:, 0].min())), 0)
        right = min(int(np.ceil(exterior[:, 0].max())), width)
        if top >= bottom or left >= right:
            continue
        box = _fill_even_odd(rings, left, top, right - left, bottom - top)
        mask[top:bottom, left:right] |= box
    return mask


def _fill_even_odd(rings: list[np.ndarray], left: int, top: int, width: int, height: int) -> np.ndarray:
    """Pixels of a `width` x `height` box at (left, top) whose centres are inside an odd number of rings."""
    flips = np.zeros((height, width + 1), dtype=np.int32)
    for ring in rings:
        start = ring - (left, top)
        end = np.roll(start, -1, axis=0)
        low = np.minimum(start[:, 1], end[:, 1])
        high = np.maximum(start[:, 1], end[:, 1])
        # Rows whose centre row + 0.5 lies in [low, high): half-open, so a vertex is counted once.
        first_row = np.clip(np.ceil(low - 0.5), 0, height).astype(np.int64)
        last_row = np.clip(np.ceil(high - 0.5), 0, height).astype(np.int64)
        row_counts = last_row - first_row
        if not row_counts.any():
            continue
        edge = np.repeat(np.arange(len(start)), row_counts)
        rows = np.repeat(first_row, row_counts) + (
            np.arange(edge.size) - np.repeat(np.cumsum(row_counts) - row_counts, row_counts)
        )
        centre_y = rows + 0.5
        x0, y0, x1, y1 = start[edge, 0], start[edge, 1], end[edge, 0], end[edge, 1]
        crossing_x = x0 + (centre_y - y0) * (x1 - x0) / (y1 - y0)
        # Parity flips at the first pixel whose centre is at or right of the crossing (top-left rule).
        first_col = np.clip(np.ceil(crossing_x - 0.5), 0, width).astype(np.int64)
        np.add.at(flips, (rows, first_col), 1)
    return (np.cumsum(flips, axis=1)[:, :width] % 2) == 1
