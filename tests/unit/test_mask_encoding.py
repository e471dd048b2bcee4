"""Mask output formats: every format round-trips, RLE matches pycocotools byte for byte, polygons exactly."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from smartseg.shared.mask_encoding import (
    MASK_FORMATS,
    EncodedMask,
    decode_rle,
    encode_mask,
    encode_png_mask,
    encode_rle,
    rasterize_polygons,
)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:height, :width]
    return rows, cols


def _disc(height: int, width: int, row: float, col: float, radius: float) -> np.ndarray:
    rows, cols = _grid(height, width)
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    ring = _disc(80, 90, 40, 45, 30) & ~_disc(80, 90, 40, 45, 12)
    island_in_hole = ring | _disc(80, 90, 40, 45, 5)
    blobs = _disc(60, 100, 15, 15, 8) | _disc(60, 100, 40, 60, 12) | _disc(60, 100, 10, 90, 3)
    thin = np.zeros((40, 50), dtype=bool)
    thin[5, 3:47] = True  # 1-pixel horizontal line
    thin[8:35, 20] = True  # 1-pixel vertical line
    thin[np.arange(10, 38), np.arange(22, 50)] = True  # 8-connected diagonal staircase
    border = _disc(50, 70, 0, 0, 25) | _disc(50, 70, 49, 69, 10)
    border[:, 60:] |= _grid(50, 10)[0] % 7 < 3  # stripes running off the right edge
    checker = (np.add(*_grid(9, 11)) % 2).astype(bool)  # pixels touching only at corners
    speckle = rng.random((37, 53)) < 0.3
    single_pixels = np.zeros((12, 12), dtype=bool)
    single_pixels[[0, 5, 11], [0, 6, 11]] = True
    hole_pixel = np.ones((5, 5), dtype=bool)
    hole_pixel[2, 2] = False
    return {
        "disc": _disc(64, 64, 31.5, 31.5, 20),
        "ring": ring,
        "island_in_hole": island_in_hole,
        "blobs": blobs,
        "thin": thin,
        "border": border,
        "checker": checker,
        "speckle_37x53": speckle,
        "single_pixels": single_pixels,
        "hole_pixel": hole_pixel,
        "empty": np.zeros((37, 53), dtype=bool),
        "full": np.ones((37, 53), dtype=bool),
        "row_1xN": rng.random((1, 29)) < 0.5,
        "column_Nx1": rng.random((31, 1)) < 0.5,
        "one_pixel_on": np.ones((1, 1), dtype=bool),
        "one_pixel_off": np.zeros((1, 1), dtype=bool),
    }


MASKS = _masks()


def _image_for(mask: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(mask.size)
    return rng.integers(0, 256, size=(*mask.shape, 3), dtype=np.uint8)


def _encode(mask: np.ndarray, output_format: str) -> EncodedMask:
    return encode_mask(mask, output_format, _image_for(mask))


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)


def _coco_counts(mask: np.ndarray) -> str:
    counts: bytes = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
    return counts.decode("ascii")


@pytest.mark.parametrize(
    ("output_format", "content_type", "suffix"),
    [
        ("png", "image/png", ".png"),
        ("rle", "application/json", ".rle.json"),
        ("polygon", "application/json", ".polygon.json"),
        ("cutout", "image/png", ".cutout.png"),
    ],
)
def test_each_format_names_its_content_type_and_suffix(
    output_format: str, content_type: str, suffix: str
) -> None:
    encoded = _encode(MASKS["ring"], output_format)
    assert (encoded.content_type, encoded.suffix) == (content_type, suffix)
    assert encoded.data


def test_formats_constant_lists_every_format() -> None:
    assert MASK_FORMATS == ("png", "rle", "polygon", "cutout")


@pytest.mark.parametrize("name", sorted(MASKS))
def test_png_decodes_to_the_same_0_255_mask(name: str) -> None:
    mask = MASKS[name]
    decoded = Image.open(io.BytesIO(_encode(mask, "png").data))
    assert decoded.mode == "L"
    assert decoded.size == (mask.shape[1], mask.shape[0])
    np.testing.assert_array_equal(np.asarray(decoded), np.where(mask, 255, 0))


def test_encode_png_mask_keeps_working_for_the_runner() -> None:
    mask = MASKS["blobs"]
    assert encode_png_mask(mask) == _encode(mask, "png").data


# pycocotools' compiled decode warns under numpy 2 (its __array__ lacks `copy`); not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@pytest.mark.parametrize("name", sorted(MASKS))
def test_rle_matches_pycocotools_and_decodes_back_exactly(name: str) -> None:
    mask = MASKS[name]
    document = json.loads(_encode(mask, "rle").data)
    assert document == {"size": list(mask.shape), "counts": _coco_counts(mask)}
    np.testing.assert_array_equal(decode_rle(document), mask)
    np.testing.assert_array_equal(coco_mask.decode(document), mask.astype(np.uint8))


def test_rle_matches_pycocotools_on_long_and_short_runs() -> None:
    # Runs from 1 to ~10^5 pixels exercise multi-group counts and negative deltas in the string coding.
    rng = np.random.default_rng(3)
    lengths = rng.choice([1, 2, 17, 31, 32, 1000, 40_000, 100_000], size=60)
    flat = np.repeat(np.arange(lengths.size) % 2 == 1, lengths)
    width = 397
    flat = np.concatenate((flat, np.zeros(-flat.size % width, dtype=bool)))
    mask = flat.reshape((width, -1)).T
    rle = encode_rle(mask)
    assert rle["counts"] == _coco_counts(mask)
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_rle_known_encodings() -> None:
    assert encode_rle(np.zeros((3, 4), dtype=bool)) == {"size": [3, 4], "counts": "<"}
    assert encode_rle(np.ones((3, 4), dtype=bool)) == {"size": [3, 4], "counts": "0<"}
    # Column-major: the only set pixel (row 0, col 1) is preceded by the 2 pixels of column 0.
    one = np.zeros((2, 2), dtype=bool)
    one[0, 1] = True
    assert encode_rle(one) == {"size": [2, 2], "counts": "211"}


def test_decode_rle_accepts_bytes_and_uncompressed_counts() -> None:
    mask = MASKS["blobs"]
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle({**rle, "counts": rle["counts"].encode()}), mask)
    # Column-major runs: 1 zero, 2 ones, 3 zeros.
    expected = np.array([[False, True, False], [True, False, False]])
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [1, 2, 3]}), expected)


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [3, 4], "counts": "3"},  # covers 3 of 12 pixels
        {"size": [3, 4], "counts": ""},  # covers none
        {"size": [3, 4], "counts": "\x10"},  # below the alphabet
        {"size": [3, 4], "counts": "P"},  # ends on a continuation group
    ],
)
def test_decode_rle_rejects_malformed_counts(rle: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decode_rle(rle)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_polygons_rasterize_back_to_the_mask(name: str) -> None:
    mask = MASKS[name]
    document = json.loads(_encode(mask, "polygon").data)
    assert (document["width"], document["height"]) == (mask.shape[1], mask.shape[0])
    # Outlines follow pixel edges, so the round trip is exact: IoU 1.0, well past the 0.95 bar.
    restored = rasterize_polygons(document)
    assert _iou(restored, mask) == 1.0
    np.testing.assert_array_equal(restored, mask)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_polygons_are_integer_pixel_edge_outlines_one_per_component(name: str) -> None:
    mask = MASKS[name]
    document = json.loads(_encode(mask, "polygon").data)
    _, components = ndimage.label(mask, structure=np.ones((3, 3)))
    assert len(document["polygons"]) == components
    height, width = mask.shape
    for polygon in document["polygons"]:
        for ring in [polygon["exterior"], *polygon["holes"]]:
            points = np.asarray(ring)
            assert points.dtype.kind == "i" and len(points) >= 4
            assert points[:, 0].min() >= 0 and points[:, 0].max() <= width
            assert points[:, 1].min() >= 0 and points[:, 1].max() <= height
            steps = np.roll(points, -1, axis=0) - points
            assert np.all((steps[:, 0] == 0) != (steps[:, 1] == 0)), "edges run along pixel edges"


def test_holes_are_listed_under_their_component_and_stay_empty() -> None:
    document = json.loads(_encode(MASKS["island_in_hole"], "polygon").data)
    polygons = sorted(document["polygons"], key=lambda polygon: len(polygon["exterior"]), reverse=True)
    ring, island = polygons
    assert len(ring["holes"]) == 1 and island["holes"] == []
    ring_only = rasterize_polygons({**document, "polygons": [ring]})
    np.testing.assert_array_equal(ring_only, MASKS["ring"])
    assert not ring_only[40, 45], "the centre of the ring is a hole"

    pinhole = json.loads(_encode(MASKS["hole_pixel"], "polygon").data)["polygons"]
    assert len(pinhole) == 1
    assert sorted(map(tuple, pinhole[0]["holes"][0])) == [(2, 2), (2, 3), (3, 2), (3, 3)]
    assert sorted(map(tuple, pinhole[0]["exterior"])) == [(0, 0), (0, 5), (5, 0), (5, 5)]


def test_polygon_coordinates_are_pixel_edges() -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    (polygon,) = json.loads(_encode(mask, "polygon").data)["polygons"]
    assert sorted(map(tuple, polygon["exterior"])) == [(2, 1), (2, 3), (4, 1), (4, 3)]


def test_empty_mask_has_no_polygons() -> None:
    document = json.loads(_encode(MASKS["empty"], "polygon").data)
    assert document == {"width": 53, "height": 37, "polygons": []}
    assert not rasterize_polygons(document).any()


def test_random_masks_round_trip_through_rle_and_polygons() -> None:
    rng = np.random.default_rng(11)
    for _ in range(150):
        height, width = (int(side) for side in rng.integers(1, 24, size=2))
        mask = rng.random((height, width)) < rng.random()
        rle = encode_rle(mask)
        assert rle["counts"] == _coco_counts(mask)
        np.testing.assert_array_equal(decode_rle(rle), mask)
        polygons = json.loads(_encode(mask, "polygon").data)
        np.testing.assert_array_equal(rasterize_polygons(polygons), mask)


def test_rasterize_fills_pixels_whose_centres_are_inside() -> None:
    triangle = {"width": 6, "height": 6, "polygons": [{"exterior": [[0, 0], [6, 0], [0, 6]], "holes": []}]}
    rows, cols = _grid(6, 6)
    np.testing.assert_array_equal(rasterize_polygons(triangle), cols + rows + 1 < 6)
    square_with_hole = {
        "width": 5,
        "height": 5,
        "polygons": [
            {
                "exterior": [[0.8, 0.8], [4.2, 0.8], [4.2, 4.2], [0.8, 4.2]],
                "holes": [[[1.8, 1.8], [3.2, 1.8], [3.2, 3.2], [1.8, 3.2]]],
            }
        ],
    }
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False
    np.testing.assert_array_equal(rasterize_polygons(square_with_hole), expected)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_cutout_is_the_source_image_with_the_mask_as_alpha(name: str) -> None:
    mask = MASKS[name]
    image = _image_for(mask)
    decoded = Image.open(io.BytesIO(encode_mask(mask, "cutout", image).data))
    assert decoded.mode == "RGBA"
    pixels = np.asarray(decoded)
    np.testing.assert_array_equal(pixels[..., 3], mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(pixels[..., :3], image)


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mask format"):
        _encode(MASKS["disc"], "svg")


@pytest.mark.parametrize(
    ("mask", "image"),
    [
        (np.zeros((4, 5), dtype=bool), np.zeros((5, 4, 3), dtype=np.uint8)),  # transposed
        (np.zeros((4, 5), dtype=bool), np.zeros((4, 5, 4), dtype=np.uint8)),  # RGBA source
        (np.zeros((4, 5), dtype=bool), np.zeros((4, 5), dtype=np.uint8)),  # greyscale source
        (np.zeros((4, 5), dtype=bool), np.zeros((4, 5, 3), dtype=np.float32)),
        (np.zeros((1, 4, 5), dtype=bool), np.zeros((4, 5, 3), dtype=np.uint8)),  # batch of masks
        (np.zeros((0, 5), dtype=bool), np.zeros((0, 5, 3), dtype=np.uint8)),
    ],
)
@pytest.mark.parametrize("output_format", MASK_FORMATS)
def test_shape_mismatches_are_rejected(mask: np.ndarray, image: np.ndarray, output_format: str) -> None:
    with pytest.raises(ValueError):
        encode_mask(mask, output_format, image)


def test_non_bool_masks_are_treated_as_truthy() -> None:
    mask = MASKS["ring"]
    as_uint8 = mask.astype(np.uint8)
    for output_format in MASK_FORMATS:
        assert _encode(as_uint8, output_format) == _encode(mask, output_format)
