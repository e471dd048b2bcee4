"""Image preprocessing for SAM 2 and SAM 3 without torchvision.

transformers' image processors for these two models only come in a torchvision flavour, and torchvision
does not import beside a CPU-only torch. What they do is small: resize to a fixed square, scale to 0..1,
normalise; masks go back by bilinear upscaling. This module does the same from the checkpoint's own
processor config, so the published folders work unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class SquareImageProcessor:
    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255

    @classmethod
    def from_folder(
        cls, folder: Path, default_size: int, default_mean: tuple[float, ...], default_std: tuple[float, ...]
    ) -> SquareImageProcessor:
        """Read ``processor_config.json`` (nested, transformers 5) or ``preprocessor_config.json`` (flat)."""
        config: dict[str, Any] = {}
        nested, flat = folder / "processor_config.json", folder / "preprocessor_config.json"
        if nested.exists():
            config = json.loads(nested.read_text()).get("image_processor", {})
        elif flat.exists():
            config = json.loads(flat.read_text())
        size = config.get("size") or {"height": default_size, "width": default_size}
        if not isinstance(size, dict) or "height" not in size or "width" not in size:
            raise ValueError(
                f"{nested if nested.exists() else flat}: expected size {{height, width}}, got {size}"
            )
        mean = _triple(config.get("image_mean") or default_mean)
        std = _triple(config.get("image_std") or default_std)
        rescale = float(config.get("rescale_factor") or 1 / 255)
        return cls(int(size["height"]), int(size["width"]), mean, std, rescale)

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, height, width) float32, normalised, from an HxWx3 uint8 RGB image."""
        resized = Image.fromarray(image).resize((self.width, self.height), Image.Resampling.BILINEAR)
        scaled = np.asarray(resized, dtype=np.float32) * np.float32(self.rescale_factor)
        mean, std = np.asarray(self.mean, dtype=np.float32), np.asarray(self.std, dtype=np.float32)
        normalised = ((scaled - mean) / std).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))[None]


def _triple(values: Any) -> tuple[float, float, float]:
    first, second, third = (float(value) for value in values)
    return first, second, third


def upscale_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n, h, w) mask logits -> (n, *size), bilinear, as the published post-processing does."""
    return F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]
