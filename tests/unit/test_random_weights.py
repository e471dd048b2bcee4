"""smartseg.testing.random_weights: tiny random-weight models, written like the published checkpoints,
load back
through the workers' loading path (``XModel``/``XProcessor.from_pretrained(folder, local_files_only=True)``)
and run; real sizes have the published parameter counts and input resolutions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    PreTrainedModel,
    Sam2Model,
    Sam3Model,
    SamModel,
    SamProcessor,
)

from smartseg.shared.errors import ModelWeightsError
from smartseg.testing.random_weights import build_random_model, save_random_model
from smartseg.worker.models.catalog import MODELS

PROMPT = "red shoe. mug handle."
HEIGHT, WIDTH = 96, 128


def setting(model: PreTrainedModel, *path: str) -> Any:
    """A value of the model's (nested) config, e.g. ``setting(model, "vision_config", "image_size")``."""
    value: Any = model.config
    for name in path:
        value = getattr(value, name)
    return value


def rgb_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def processor_config(folder: Path) -> dict[str, object]:
    config = json.loads((folder / "processor_config.json").read_text())
    assert isinstance(config, dict)
    return config


def test_grounding_dino_loads_back_and_detects_phrases(tmp_path: Path) -> None:
    folder = save_random_model("grounding-dino-tiny", tmp_path / "gd")
    model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True)
    processor = GroundingDinoProcessor.from_pretrained(folder, local_files_only=True)

    inputs = processor(images=rgb_image(), text=PROMPT, return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    assert tokens == ["[CLS]", "red", "shoe", ".", "mug", "handle", ".", "[SEP]"]
    # GroundingDinoModel splits phrases on bert-base-uncased's ids for [CLS], [SEP] and ".".
    ids = inputs["input_ids"][0].tolist()
    assert (ids[0], ids[3], ids[6], ids[7]) == (101, 1012, 1012, 102)
    with torch.inference_mode():
        outputs = model(**inputs)

    queries, text_len = model.config.num_queries, inputs["input_ids"].shape[1]
    assert outputs.logits.shape == (1, queries, model.config.max_text_len)
    assert torch.isfinite(outputs.logits[..., :text_len]).all()  # beyond the text: -inf by design
    assert outputs.pred_boxes.shape == (1, queries, 4)
    assert torch.isfinite(outputs.pred_boxes).all()
    results = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(HEIGHT, WIDTH)]
    )
    assert results[0]["boxes"].shape == (queries, 4)
    assert len(results[0]["text_labels"]) == queries


def test_sam_loads_back_and_segments_a_box(tmp_path: Path) -> None:
    folder = save_random_model("sam-vit-base", tmp_path / "sam")
    model = SamModel.from_pretrained(folder, local_files_only=True)
    processor = SamProcessor.from_pretrained(folder, local_files_only=True)

    inputs = processor(images=rgb_image(), input_boxes=[[[10, 20, 70, 80]]], return_tensors="pt")
    size = setting(model, "vision_config", "image_size")
    assert inputs["pixel_values"].shape == (1, 3, size, size)
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=False)

    low_res = 4 * setting(model, "prompt_encoder_config", "image_embedding_size")
    assert outputs.pred_masks.shape == (1, 1, 1, low_res, low_res)
    assert outputs.iou_scores.shape == (1, 1, 1)
    assert torch.isfinite(outputs.pred_masks).all() and torch.isfinite(outputs.iou_scores).all()
    masks = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert masks[0].shape == (1, 1, HEIGHT, WIDTH)
    assert (
        setting(model, "vision_config", "initializer_range") == 1e-10
    )  # the published value, not the one drawn at


def test_sam2_is_a_sam2_video_checkpoint_that_sam2model_runs(tmp_path: Path) -> None:
    folder = save_random_model("sam2.1-hiera-tiny", tmp_path / "sam2")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam2_video"  # as published
    model = Sam2Model.from_pretrained(folder, local_files_only=True)
    size = setting(model, "prompt_encoder_config", "image_size")
    image_processor = processor_config(folder)["image_processor"]
    assert isinstance(image_processor, dict)
    assert image_processor["size"] == {"height": size, "width": size}

    # Boxes in the model's input frame, as Sam2Processor scales them (resized to the square input).
    pixel_values = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[5.0, 10.0, 35.0, 50.0]]])
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)

    low_res = 4 * size // setting(model, "prompt_encoder_config", "patch_size")
    assert outputs.pred_masks.shape == (1, 1, 1, low_res, low_res)
    assert outputs.iou_scores.shape == (1, 1, 1)
    assert torch.isfinite(outputs.pred_masks).all() and torch.isfinite(outputs.iou_scores).all()


def test_sam3_is_a_sam3_video_checkpoint_that_sam3model_runs_on_text(tmp_path: Path) -> None:
    folder = save_random_model("sam3", tmp_path / "sam3")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3_video"  # as published
    model = Sam3Model.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    tokens = tokenizer.convert_ids_to_tokens(tokenizer(PROMPT)["input_ids"])
    assert tokens == [
        "<|startoftext|>",
        "red</w>",
        "shoe</w>",
        ".</w>",
        "mug</w>",
        "handle</w>",
        ".</w>",
        "<|endoftext|>",
    ]
    text = tokenizer(
        "shoe", padding="max_length", max_length=32, return_tensors="pt"
    )  # as Sam3Processor does
    size = setting(model, "vision_config", "image_size")
    pixel_values = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        outputs = model(
            pixel_values=pixel_values, input_ids=text["input_ids"], attention_mask=text["attention_mask"]
        )

    queries = setting(model, "detr_decoder_config", "num_queries")
    mask_size = setting(model, "vision_config", "backbone_feature_sizes")[0]
    assert outputs.pred_masks.shape == (1, queries, *mask_size)
    assert outputs.pred_boxes.shape == (1, queries, 4)
    assert outputs.pred_logits.shape == (1, queries)
    assert outputs.presence_logits.shape == (1, 1)
    for tensor in (outputs.pred_masks, outputs.pred_boxes, outputs.pred_logits, outputs.presence_logits):
        assert torch.isfinite(tensor).all()


def test_the_same_seed_writes_the_same_weights_and_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = save_random_model("sam-vit-base", tmp_path / "a", seed=7)
    assert torch.equal(torch.rand(3), expected)

    again = save_random_model("sam-vit-base", tmp_path / "b", seed=7)
    other = save_random_model("sam-vit-base", tmp_path / "c", seed=8)
    weights = [(folder / "model.safetensors").read_bytes() for folder in (first, again, other)]
    assert weights[0] == weights[1] != weights[2]


# Published parameter counts (millions), from the model pages and papers; sam2.1 and sam3 count the video
# checkpoint as published (Sam2Model loads 31.4M of sam2.1-hiera-tiny's 39M, Sam3Model 840M of sam3's 860M).
PUBLISHED_PARAMETERS = {
    "grounding-dino-tiny": 172,
    "grounding-dino-base": 233,
    "sam-vit-base": 93.7,
    "sam-vit-large": 312,
    "sam-vit-huge": 641,
    "sam2.1-hiera-tiny": 38.9,
    "sam2.1-hiera-small": 46,
    "sam2.1-hiera-base-plus": 80.8,
    "sam2.1-hiera-large": 224.4,
    "sam3": 860,
}
# The processors' input sizes in the published repositories.
PUBLISHED_SIZES = {
    "grounding-dino": {"shortest_edge": 800, "longest_edge": 1333},
    "sam": {"longest_edge": 1024},
    "sam2": {"height": 1024, "width": 1024},
    "sam3": {"height": 1008, "width": 1008},
}


def test_every_catalog_model_has_a_published_parameter_count() -> None:
    assert set(PUBLISHED_PARAMETERS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_real_size_matches_the_published_architecture(name: str, tmp_path: Path) -> None:
    model, save_processor = build_random_model(name, "real", device="meta")  # no weights: no time, no memory
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    assert parameters == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.01)

    save_processor(tmp_path)
    image_processor = processor_config(tmp_path)["image_processor"]
    assert isinstance(image_processor, dict)
    assert image_processor["size"] == PUBLISHED_SIZES[MODELS[name].architecture]


def test_unknown_names_and_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelWeightsError, match="unknown model"):
        save_random_model("sam-vit-tiny", tmp_path)
    with pytest.raises(ValueError, match="size"):
        save_random_model("sam-vit-base", tmp_path, size="small")  # type: ignore[arg-type]
