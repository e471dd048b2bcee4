"""Where and how models run: device, precision and thread count, chosen once per worker from settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.settings import Settings

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RuntimeConfigError(RuntimeError):
    """The device/precision settings cannot work on this machine."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # for the SAM-family image encoders; detectors stay in float32

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        has_cuda = torch.cuda.is_available()
        if settings.device == "cuda" and not has_cuda:
            raise RuntimeConfigError("SMARTSEG_DEVICE=cuda but torch sees no CUDA device")
        device = torch.device(
            "cuda" if settings.device == "cuda" or (settings.device == "auto" and has_cuda) else "cpu"
        )
        if settings.dtype == "auto":
            dtype = torch.float32
            if device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = _DTYPES[settings.dtype]
        if device.type == "cpu" and dtype != torch.float32:
            # Half precision on CPU is slower than float32 and some kernels lack it.
            raise RuntimeConfigError(
                f"SMARTSEG_DTYPE={settings.dtype} needs CUDA; use float32 or auto on CPU"
            )
        return cls(device, dtype)
