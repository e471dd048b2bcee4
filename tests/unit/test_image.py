"""Image decoding: orientation, modes, pixel limits and broken input."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from smartseg.shared.errors import ImageInvalid, ImageTooLarge
from smartseg.worker.image import decode_image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
EXIF_ORIENTATION_TAG = 0x0112
ROTATE_90_CW = 6
# JPEG is lossy: solid colours come back close, not exact.
JPEG_TOLERANCE = 40


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but that carries no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def decode_pixels(data: bytes, **limits: int) -> np.ndarray:
    return decode_image(data, **limits).pixels


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)


def test_rgb_png_round_trips_exactly() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    decoded = decode_pixels(encode(Image.fromarray(pixels)))
    assert_rgb(decoded, 5, 7)
    np.testing.assert_array_equal(decoded, pixels)
    decoded[0, 0] = 0  # callers get their own writable copy


def test_exif_orientation_6_rotates_clockwise() -> None:
    # Stored 32 wide x 16 high, left half red, right half green; orientation 6 means "rotate 90° CW
    # to display", so the displayed image is 16 wide x 32 high with red on top.
    stored = Image.new("RGB", (32, 16), GREEN)
    stored.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    decoded = decode_pixels(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert_rgb(decoded, 32, 16)
    np.testing.assert_allclose(decoded[4, 8], RED, atol=JPEG_TOLERANCE)
    np.testing.assert_allclose(decoded[28, 8], GREEN, atol=JPEG_TOLERANCE)


def test_rgba_alpha_is_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128)])
    decoded = decode_pixels(encode(image))
    assert_rgb(decoded, 1, 3)
    assert tuple(decoded[0, 0]) == RED
    assert tuple(decoded[0, 1]) == WHITE
    assert abs(int(decoded[0, 2, 0]) - 127) <= 1


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE])
    image.putdata([0, 1])
    decoded = decode_pixels(encode(image, transparency=1))
    assert [tuple(pixel) for pixel in decoded[0]] == [RED, WHITE]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 255), (100, 100, 100)),
        ("1", 1, WHITE),
        ("P", 0, (0, 0, 0)),
    ],
)
def test_other_modes_become_rgb(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    decoded = decode_pixels(encode(Image.new(mode, (4, 3), value)))  # type: ignore[arg-type]
    assert_rgb(decoded, 3, 4)
    assert tuple(decoded[1, 1]) == expected


def test_cmyk_becomes_rgb() -> None:
    decoded = decode_pixels(encode(Image.new("CMYK", (4, 3), (0, 255, 255, 0)), "JPEG", quality=95))
    assert_rgb(decoded, 3, 4)
    np.testing.assert_allclose(decoded[1, 1], RED, atol=JPEG_TOLERANCE)


def test_16_bit_samples_are_scaled_not_clipped() -> None:
    samples = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(samples)
    assert image.mode == "I;16"
    decoded = decode_pixels(encode(image))
    assert_rgb(decoded, 1, 4)
    assert decoded[0, :, 0].tolist() == [0, 3, 128, 255]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_gives_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    data = encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True
    )
    decoded = decode_pixels(data)
    assert_rgb(decoded, 4, 4)
    assert tuple(decoded[2, 2]) == RED


def test_too_many_pixels_is_refused_from_the_header() -> None:
    # No pixel data follows the header: decoding it would fail as truncated, so ImageTooLarge here
    # shows the limit is checked before any decoding.
    with pytest.raises(ImageTooLarge) as info:
        decode_image(png_header_only(1000, 1000), max_pixels=999_999)
    assert info.value.details == {"max_pixels": 999_999, "width": 1000, "height": 1000}


def test_image_at_pixel_limit_is_accepted() -> None:
    assert_rgb(decode_pixels(encode(Image.new("RGB", (10, 10))), max_pixels=100), 10, 10)


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (100_000, 100_000)])
def test_pillow_decompression_bomb_checks_surface_as_too_large(width: int, height: int) -> None:
    # 10k x 10k trips Pillow's DecompressionBombWarning, 100k x 100k its DecompressionBombError.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge):
            decode_image(png_header_only(width, height))
    assert caught == []


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_is_invalid(data: bytes) -> None:
    with pytest.raises(ImageInvalid):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_invalid(fmt: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), fmt)
    with pytest.raises(ImageInvalid):
        decode_image(data[: len(data) // 2])


def header_claims(data: bytes, marker: bytes, offset: int, fmt: str, width: int, height: int) -> bytes:
    """``data`` with the size in its header rewritten; the pixel data stays that of the small image."""
    patched = bytearray(data)
    at = patched.index(marker) + offset
    struct.pack_into(fmt, patched, at, *((height, width) if fmt == ">HH" else (width, height)))
    if marker == b"IHDR":  # a PNG chunk carries a CRC of its type and data
        struct.pack_into(">I", patched, at + 8, zlib.crc32(bytes(patched[at - 4 : at + 8])))
    return bytes(patched)


def noise(width: int = 160, height: int = 120) -> Image.Image:
    return Image.fromarray(np.random.default_rng(2).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "data",
    [
        # JPEG: the start-of-frame marker holds height then width; libjpeg pads missing data with grey.
        header_claims(encode(noise(), "JPEG"), b"\xff\xc0", 5, ">HH", 6000, 6000),
        header_claims(encode(noise(), "JPEG", progressive=True), b"\xff\xc2", 5, ">HH", 6000, 6000),
        header_claims(encode(noise(), "JPEG"), b"\xff\xc0", 5, ">HH", 161, 120),
        header_claims(encode(noise()), b"IHDR", 4, ">II", 6000, 6000),
    ],
    ids=["jpeg-36mp", "progressive-jpeg-36mp", "jpeg-one-column-more", "png-36mp"],
)
def test_data_shorter_than_the_header_claims_is_invalid(data: bytes) -> None:
    with pytest.raises(ImageInvalid):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_formats_outside_the_accepted_ones_are_invalid(fmt: str) -> None:
    with pytest.raises(ImageInvalid) as info:
        decode_image(encode(noise(32, 32), fmt))
    assert info.value.details == {"accepted_formats": ["JPEG", "PNG", "WebP"]}


def halves(width: int, height: int) -> Image.Image:
    """Red on the left half, blue on the right."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_large_image_is_decoded_at_the_working_size(fmt: str) -> None:
    decoded = decode_image(encode(halves(4000, 3000), fmt, quality=95), max_side=1000)
    assert (decoded.width, decoded.height) == (4000, 3000) and decoded.scaled
    assert_rgb(decoded.pixels, 750, 1000)
    np.testing.assert_allclose(decoded.pixels[375, 250], RED, atol=JPEG_TOLERANCE)
    np.testing.assert_allclose(decoded.pixels[375, 750], BLUE, atol=JPEG_TOLERANCE)


def test_an_image_within_the_working_size_is_not_scaled() -> None:
    decoded = decode_image(encode(halves(400, 300)), max_side=1000)
    assert not decoded.scaled and (decoded.width, decoded.height) == (400, 300)
    mask = np.zeros((300, 400), dtype=bool)
    assert decoded.full_size(mask) is mask


def test_the_full_size_follows_the_exif_orientation() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = ROTATE_90_CW
    decoded = decode_image(encode(halves(4000, 2000), "JPEG", exif=exif.tobytes()), max_side=1000)
    assert (decoded.width, decoded.height) == (2000, 4000)
    assert_rgb(decoded.pixels, 1000, 500)
    np.testing.assert_allclose(
        decoded.pixels[250, 250], RED, atol=JPEG_TOLERANCE
    )  # the left half, now on top


def test_masks_come_back_at_full_size() -> None:
    decoded = decode_image(encode(halves(4000, 3000)), max_side=1000)
    mask = np.zeros((750, 1000), dtype=bool)
    mask[:, :500] = True  # the red half, found at the working size
    full = decoded.full_size(mask)
    assert full.shape == (3000, 4000) and full.dtype == bool
    assert full[:, :1998].all() and not full[:, 2002:].any()
