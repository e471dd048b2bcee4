"""Loading models and their processors from local folders, failing with a message that names the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smartseg.shared.errors import ModelLoadError, ModelWeightsError
from smartseg.worker.models.manifest import verify_model_folder


def _weights_files(folder: Path) -> str:
    names = sorted(path.name for path in folder.glob("*.safetensors")) or ["model.safetensors"]
    return ", ".join(str(folder / name) for name in names)


def load_model(folder: Path, model_class: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The model in eval mode on ``device`` in ``dtype``, after checking the folder; never touches a hub."""
    try:
        verify_model_folder(folder)
    except ModelWeightsError as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        model = model_class.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the weights {_weights_files(folder)}: {exc}") from exc
    return model.to(device).eval()


def load_processor(folder: Path, processor_class: Any) -> Any:
    """A processor or tokenizer saved beside the model."""
    try:
        return processor_class.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the processor files in {folder}: {exc}") from exc
