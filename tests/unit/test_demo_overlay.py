"""The demo's overlay: outside the masks is dimmed, inside is tinted, so the selection is visible."""

from __future__ import annotations

import numpy as np
from PIL import Image

from smartseg.shared.results import overlay


def test_overlay_dims_outside_and_keeps_masks_bright() -> None:
    image = Image.new("RGB", (20, 10), (200, 200, 200))
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:8, 5:15] = True
    pixels = np.asarray(overlay(image, [mask])).astype(int)
    assert pixels.shape == (10, 20, 3)
    assert pixels[~mask].sum(axis=-1).max() < pixels[mask].sum(axis=-1).min()
    assert (np.asarray(overlay(image, [])) < 200).all()  # no match: everything dimmed
