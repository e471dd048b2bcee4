"""Decoding fetched image bytes into the RGB array every pipeline stage consumes."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from smartseg.shared.errors import ImageInvalid, ImageTooLarge

DEFAULT_MAX_PIXELS = 40_000_000
# Transparent pixels are shown on white, the background most viewers use.
ALPHA_BACKGROUND = (255, 255, 255, 255)
# Integer modes Pillow cannot scale to 8 bits by itself (its convert() clips at 255 instead).
HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
SIXTEEN_BIT_MAX = 65535
SIXTEEN_TO_EIGHT_BIT_SHIFT = 8


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into an HxWx3 ``uint8`` RGB array.

    The EXIF orientation is applied, any mode is converted to RGB (alpha is composited on white,
    16-bit samples are scaled to 8 bits, no ICC colour management) and animated images yield their
    first frame. Raises ImageTooLarge when the header declares more than ``max_pixels`` pixels, which
    is checked before any pixel data is decoded, and ImageInvalid for bytes that are not a decodable
    image (unknown format, corrupt or truncated data).
    """
    # Pillow warns (DecompressionBombWarning) or raises past its own global pixel limit; both must
    # surface as ImageTooLarge rather than a logged warning or an unrelated error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(max_pixels) from exc
        except Exception as exc:
            raise ImageInvalid("The image format is not recognised.") from exc
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_large(max_pixels, width, height)
            try:
                image.load()  # Decodes the current frame: the first one of an animation.
                rgb = _to_rgb(ImageOps.exif_transpose(image))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_large(max_pixels, width, height) from exc
            # Pillow's decoders raise a wide assortment on hostile input (OSError, SyntaxError,
            # struct.error, EOFError, ValueError...); all mean the bytes are not a usable image.
            except Exception as exc:
                raise ImageInvalid("The image data is corrupt or truncated.") from exc
    return np.array(rgb, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_BIT_DEPTH_MODES:
        samples = np.clip(np.asarray(image, dtype=np.int64), 0, SIXTEEN_BIT_MAX)
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
