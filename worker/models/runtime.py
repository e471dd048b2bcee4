"""Where and how models run: device, precision and thread count, chosen once per worker."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smartseg.shared.errors import RuntimeConfigError
from smartseg.shared.settings import DeviceSetting, DtypeSetting

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # for the SAM-family image encoders; detectors stay in float32

    @classmethod
    def choose(
        cls, device: DeviceSetting = "auto", dtype: DtypeSetting = "auto", threads: int = 0
    ) -> Runtime:
        """The runtime these settings ask for, once per worker; ``threads`` (0: torch's own) are set now."""
        if threads:
            torch.set_num_threads(threads)
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            raise RuntimeConfigError("SMARTSEG_DEVICE=cuda but torch sees no CUDA device")
        chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu")
        if dtype == "auto":
            precision = torch.float32
            if chosen.type == "cuda":
                precision = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            precision = _DTYPES[dtype]
        if chosen.type == "cpu" and precision != torch.float32:
            # Half precision on CPU is slower than float32 and some kernels lack it.
            raise RuntimeConfigError(f"SMARTSEG_DTYPE={dtype} needs CUDA; use float32 or auto on CPU")
        return cls(chosen, precision)
