"""The models smartseg knows: the folder name each has under ``SMARTSEG_MODEL_DIR``, its architecture and
where its published weights live. Folders hold what ``save_pretrained`` writes for the model and its
processor (``config.json``, ``model.safetensors``, processor and tokenizer files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from smartseg.shared.errors import ModelWeightsError

Architecture = Literal["grounding-dino", "sam", "sam2", "sam3"]


@dataclass(frozen=True)
class ModelSpec:
    name: str  # folder name under SMARTSEG_MODEL_DIR
    architecture: Architecture
    hub_repo: str  # where `smartseg models fetch` downloads it from


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("grounding-dino-tiny", "grounding-dino", "IDEA-Research/grounding-dino-tiny"),
        ModelSpec("grounding-dino-base", "grounding-dino", "IDEA-Research/grounding-dino-base"),
        ModelSpec("sam-vit-base", "sam", "facebook/sam-vit-base"),
        ModelSpec("sam-vit-large", "sam", "facebook/sam-vit-large"),
        ModelSpec("sam-vit-huge", "sam", "facebook/sam-vit-huge"),
        ModelSpec("sam2.1-hiera-tiny", "sam2", "facebook/sam2.1-hiera-tiny"),
        ModelSpec("sam2.1-hiera-small", "sam2", "facebook/sam2.1-hiera-small"),
        ModelSpec("sam2.1-hiera-base-plus", "sam2", "facebook/sam2.1-hiera-base-plus"),
        ModelSpec("sam2.1-hiera-large", "sam2", "facebook/sam2.1-hiera-large"),
        ModelSpec("sam3", "sam3", "facebook/sam3"),
    )
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelWeightsError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


@dataclass(frozen=True)
class ModelNames:
    """The model folder of each role, as the settings name them (``SMARTSEG_DETECTOR_MODEL`` and so on)."""

    detector: str
    sam: str
    sam2: str
    sam3: str
