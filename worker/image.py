"""Decoding fetched image bytes into the RGB array every pipeline stage consumes.

Only JPEG, PNG and WebP are accepted: their decoders here refuse data that does not fill the size the
header claims (a JPEG's through libjpeg-turbo's strict mode), while Pillow's GIF, BMP, TIFF and other
decoders either pad a short image silently or widen what a hostile file can reach.

Pipelines work at ``max_side`` pixels at most on the longest side (every model here resizes to 1333 or
less), so a large image is decoded small: a JPEG at a reduced DCT scale (Pillow's draft mode), any other
image reduced right after decoding. Masks come back at the size the client sent (``full_size``).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from smartseg.shared.errors import ImageInvalid, ImageTooLarge
from smartseg.shared.mask_encoding import mask_levels

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 2048
# Naming the plugins imports them, which registers their decoders for Image.open(formats=...).
ACCEPTED_FORMATS = tuple(
    str(plugin.format)
    for plugin in (JpegImagePlugin.JpegImageFile, PngImagePlugin.PngImageFile, WebPImagePlugin.WebPImageFile)
)
ACCEPTED_NAMES = ["JPEG", "PNG", "WebP"]
JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: the multi-picture JPEG many cameras write, opened as JPEG
# EXIF orientations 5 to 8 turn the image by 90 degrees: the displayed width is the stored height.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Transparent pixels are shown on white, the background most viewers use.
ALPHA_BACKGROUND = (255, 255, 255, 255)
# Integer modes Pillow cannot scale to 8 bits by itself (its convert() clips at 255 instead).
HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
SIXTEEN_BIT_MAX = 65535
SIXTEEN_TO_EIGHT_BIT_SHIFT = 8
MASK_THRESHOLD = 128  # of mask_levels' 0..255


@dataclass(frozen=True)
class DecodedImage:
    """``pixels`` (HxWx3 uint8 RGB) is what the pipeline sees, at most ``max_side`` on its longest side;
    ``width`` x ``height`` is the size the image was sent at (after its EXIF orientation)."""

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scaled(self) -> bool:
        return self.pixels.shape[:2] != (self.height, self.width)

    def full_size(self, mask: np.ndarray) -> np.ndarray:
        """A bool mask of ``pixels``' size brought to the image's size; scaled linearly and cut at half
        way, so edges stay smooth rather than stair-stepped."""
        if not self.scaled:
            return mask
        resized = cv2.resize(mask_levels(mask), (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return np.asarray(resized >= MASK_THRESHOLD)


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> DecodedImage:
    """Decode image bytes, scaled down to ``max_side`` on the longest side when given.

    The EXIF orientation is applied, any mode is converted to RGB (alpha is composited on white,
    16-bit samples are scaled to 8 bits, no ICC colour management) and animated images yield their
    first frame. Raises ImageTooLarge when the header declares more than ``max_pixels`` pixels, which
    is checked before any pixel data is decoded, and ImageInvalid for bytes that are not a decodable
    JPEG, PNG or WebP image (another format, corrupt or truncated data, less data than the header claims).
    """
    # Pillow warns (DecompressionBombWarning) or raises past its own global pixel limit; both must
    # surface as ImageTooLarge rather than a logged warning or an unrelated error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(max_pixels) from exc
        except Exception as exc:
            raise ImageInvalid(
                "The image is not a JPEG, PNG or WebP file.", {"accepted_formats": ACCEPTED_NAMES}
            ) from exc
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_large(max_pixels, width, height)
            try:
                if image.format in JPEG_FORMATS:
                    _check_jpeg_data(data)
                    if max_side:
                        image.draft(None, _draft_size(width, height, max_side))
                orientation = image.getexif().get(ExifTags.Base.Orientation)
                image.load()  # Decodes the current frame: the first one of an animation.
                ImageOps.exif_transpose(image, in_place=True)  # in place: no full-size copy
                rgb = _to_rgb(image)
                if max_side:
                    rgb.thumbnail((max_side, max_side))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_large(max_pixels, width, height) from exc
            except ImageInvalid:
                raise
            # Pillow's decoders raise a wide assortment on hostile input (OSError, SyntaxError,
            # struct.error, EOFError, ValueError...); all mean the bytes are not a usable image.
            except Exception as exc:
                raise ImageInvalid("The image data is corrupt or truncated.") from exc
    if orientation in QUARTER_TURNS:
        width, height = height, width
    return DecodedImage(np.array(rgb, dtype=np.uint8), width, height)


def _check_jpeg_data(data: bytes) -> None:
    """libjpeg-turbo in strict mode refuses what Pillow lets through: entropy-coded data that ends before
    the size in the header is filled (libjpeg pads the rest with grey). Decoded at its smallest scale:
    the whole stream is read, little memory is used."""
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        target = "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, colorspace=target, min_width=1, min_height=1, strict=True)
    except ValueError as exc:
        raise ImageInvalid(f"The JPEG data does not match its header: {exc}.") from exc


def _draft_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size a JPEG must at least be decoded at for its longest side to reach ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return math.ceil(width * scale), math.ceil(height * scale)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_BIT_DEPTH_MODES:
        samples = np.clip(np.asarray(image), 0, SIXTEEN_BIT_MAX)  # "I" is signed 32-bit
        gray = (samples >> SIXTEEN_TO_EIGHT_BIT_SHIFT).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, ALPHA_BACKGROUND)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _too_large(max_pixels: int, width: int | None = None, height: int | None = None) -> ImageTooLarge:
    details: dict[str, Any] = {"max_pixels": max_pixels}
    if width is not None and height is not None:
        details |= {"width": width, "height": height}
    return ImageTooLarge(f"The image has more than {max_pixels} pixels.", details)
