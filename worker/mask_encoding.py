"""Mask encodings. PNG for now: 8-bit, 0/255, the image's size."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_CONTENT_TYPE = "image/png"


def encode_png_mask(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
