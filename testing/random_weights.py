"""Random-weight stand-ins for the catalog's models, written the way the published checkpoints are laid out.

``save_random_model(name, folder)`` builds the architecture of catalog model ``name`` with seeded random
weights plus its full processor (image processor, and tokenizer where the model reads text) and writes both
with ``save_pretrained`` so that ``XModel.from_pretrained(folder, local_files_only=True)`` and
``XProcessor.from_pretrained(folder, local_files_only=True)`` load them, exactly as the workers load the real
checkpoints. Nothing is downloaded: tokenizers are built from vocabularies generated here.

Layouts follow the published repositories:

* ``grounding-dino-*`` (``IDEA-Research/...``): a ``grounding-dino`` config (Swin backbone + BERT text
  encoder) and a BERT WordPiece tokenizer whose special ids match ``bert-base-uncased`` ([PAD]=0, [CLS]=101,
  [SEP]=102, "."=1012, "?"=1029): ``GroundingDinoModel`` hard-codes those ids to split phrases.
* ``sam-vit-*`` (``facebook/sam-vit-*``): a ``sam`` config and a ``SamProcessor``.
* ``sam2.1-hiera-*`` (``facebook/sam2.1-hiera-*``): published as a ``sam2_video`` checkpoint (memory
  attention/encoder weights included; ~39M parameters for tiny, of which ``Sam2Model`` loads ~31M and skips
  the rest through its ``_keys_to_ignore_on_load_unexpected``; transformers logs "You are using a model of
  type `sam2_video` to instantiate a model of type `sam2`", as it does for the real checkpoint).
* ``sam3`` (``facebook/sam3``): published as a ``sam3_video`` checkpoint (``detector_model.*`` = the
  ``Sam3Model``, plus ``tracker_model.*``/``tracker_neck.*`` that ``Sam3Model`` skips) with a CLIP BPE
  tokenizer.

``size="tiny"`` shrinks every width, depth and input resolution as far as the architecture allows (a
forward pass takes milliseconds on a CPU and the folder is a few MB); ``size="real"`` reproduces the
published architecture sizes and processor resolutions, for timing and memory benchmarks.

``Sam2ImageProcessor`` and ``Sam3ImageProcessor`` need torchvision. Where it cannot be imported, their
``processor_config.json`` is written from the same dictionary ``save_pretrained`` would write (identical
bytes; the tokenizer is still saved by ``save_pretrained``), so the folder is complete, but loading it back
with ``Sam2Processor``/``Sam3Processor`` still needs torchvision.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    BertConfig,
    BertTokenizer,
    CLIPTextConfig,
    CLIPTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessorPil,
    GroundingDinoProcessor,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Sam2HieraDetConfig,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VisionConfig,
    Sam3Config,
    Sam3VideoConfig,
    Sam3VideoModel,
    SamConfig,
    SamImageProcessorPil,
    SamModel,
    SamProcessor,
    SamVisionConfig,
    SwinConfig,
)

from smartseg.worker.models.catalog import model_spec

Size = Literal["tiny", "real"]

# Words every generated tokenizer knows as whole tokens, so that prompts such as "red shoe. mug handle."
# tokenize the way a real vocabulary would; any other lowercase word still tokenizes, in pieces.
WORDS: tuple[str, ...] = (
    # a few function words
    "a", "an", "the", "of", "and", "or", "with", "on", "in", "at", "to", "left", "right", "top", "bottom",
    "front", "back", "big", "small", "large", "little", "old", "new", "open", "closed", "empty", "full",
    # colours and materials
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "grey",
    "gold", "silver", "dark", "light", "wooden", "metal", "glass", "plastic", "paper",
    # shapes
    "circle", "square", "triangle", "rectangle", "star", "line", "dot", "ring", "box", "ball",
    # people and animals
    "person", "people", "man", "woman", "child", "boy", "girl", "baby", "face", "hand", "hair", "head",
    "eye", "arm", "leg", "foot", "cat", "dog", "bird", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "fish", "shark", "mouse", "rabbit", "duck", "tail", "ear", "nose",
    # things
    "shoe", "shoes", "boot", "sock", "hat", "cap", "shirt", "dress", "bag", "backpack", "umbrella", "tie",
    "mug", "cup", "handle", "bottle", "glasses", "wine", "fork", "knife", "spoon", "bowl", "plate", "pan",
    "pot", "lid", "banana", "apple", "sandwich", "pizza", "donut", "cake", "bread", "carrot", "broccoli",
    "chair", "couch", "sofa", "table", "bed", "toilet", "sink", "door", "window", "wall", "floor", "roof",
    "lamp", "clock", "vase", "book", "books", "phone", "laptop", "keyboard", "screen", "tv", "remote",
    "car", "bus", "truck", "train", "bicycle", "bike", "motorcycle", "boat", "airplane", "plane", "wheel",
    "tire", "road", "street", "sign", "light", "tree", "flower", "plant", "grass", "leaf", "sky", "cloud",
    "water", "sea", "sand", "rock", "stone", "mountain", "building", "house", "bridge", "fence", "kite",
    "frisbee", "skateboard", "surfboard", "racket", "bat", "glove", "scissors", "toothbrush", "teddy",
    "logo", "text", "object", "thing", "part", "piece", "corner", "edge", "center", "middle",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# Tokenizers, built offline.


def _bert_vocab(vocab_size: int | None) -> dict[str, int]:
    """A WordPiece vocabulary laid out like ``bert-base-uncased`` where GroundingDINO depends on it.

    [PAD]=0, [unused0..98]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, fillers up to 998, then the
    printable ASCII characters without upper case from 999 (so "."=1012 and "?"=1029, GroundingDINO's phrase
    delimiters), ``##`` continuations for letters and digits (every lowercase word tokenizes without [UNK]),
    then ``WORDS``. ``vocab_size`` pads it with ``[unusedN]`` to the real model's embedding count.
    """
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(99, 99 + 999 - len(tokens))]
    tokens += [chr(c) for c in range(0x21, 0x7F) if not chr(c).isupper()]
    tokens += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens += [w for w in dict.fromkeys(WORDS) if w not in tokens]
    if vocab_size is not None:
        if vocab_size < len(tokens):
            raise ValueError(f"vocab_size {vocab_size} < {len(tokens)} generated tokens")
        filler = len(tokens)
        tokens += [f"[unused{i}]" for i in range(filler, filler + vocab_size - len(tokens))]
    vocab = {token: i for i, token in enumerate(tokens)}
    assert vocab["[CLS]"] == 101 and vocab["[SEP]"] == 102 and vocab["."] == 1012 and vocab["?"] == 1029
    return vocab


def _bert_tokenizer(vocab_size: int | None) -> BertTokenizer:
    # model_max_length as in bert-base-uncased's tokenizer_config.json.
    return BertTokenizer(vocab=_bert_vocab(vocab_size), do_lower_case=True, model_max_length=512)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: every byte as a printable unicode character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@functools.cache
def _learn_merges(words: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Greedy BPE on ``words`` (each seen once) until every word is one symbol, CLIP-style (``</w>`` ends a
    word). Deterministic: ties go to the first pair met. Encoding a training word with the resulting merges
    replays its training merges, so each ends as a single token."""
    seqs = [[*w[:-1], w[-1] + "</w>"] for w in words if w]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seq in seqs:
            for pair in itertools.pairwise(seq):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return tuple(merges)
        best = max(counts, key=lambda p: counts[p])  # first maximal pair in insertion order
        merges.append(best)
        joined = best[0] + best[1]
        for k, seq in enumerate(seqs):
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = out


def _clip_tokenizer(vocab_size: int | None) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer (what ``facebook/sam3`` uses): the 256 byte symbols, the same with
    ``</w>``, merges learnt on ``WORDS``, then ``<|startoftext|>``/``<|endoftext|>`` as the last two ids (as
    in CLIP's 49408-token vocabulary: 49406/49407 when ``vocab_size`` pads it to the real size)."""
    alphabet = list(_bytes_to_unicode().values())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet)]
    words = tuple("".join(_bytes_to_unicode()[b] for b in w.encode()) for w in dict.fromkeys(WORDS))
    merges = list(_learn_merges(words))
    tokens += [a + b for a, b in merges]
    tokens = list(dict.fromkeys(tokens))
    if vocab_size is not None:
        if vocab_size < len(tokens) + 2:
            raise ValueError(f"vocab_size {vocab_size} < {len(tokens) + 2} generated tokens")
        filler = len(tokens)
        tokens += [f"<|unused{i}|>" for i in range(filler, vocab_size - 2)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    # model_max_length: Sam3Processor pads every prompt to 32 tokens, the text encoder's position count.
    # merges: the tokenizers BPE model wants (left, right) pairs; transformers' hint says list[str].
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# Recipes: the model class, its configuration and how to save the processor. Real sizes: where not said
# otherwise, the transformers defaults, documented as the published checkpoints; tests check the resulting
# parameter counts against the published ones.


@dataclass(frozen=True)
class _Recipe:
    model_class: type[PreTrainedModel]
    config: PreTrainedConfig
    save_processor: Callable[[Path], object]
    # Config fields to write back after the weights are drawn (see _sam).
    config_after_init: dict[str, Any] = field(default_factory=dict)


def _grounding_dino(name: str, size: Size) -> _Recipe:
    if size == "real":
        # Backbone per transformers' convert_grounding_dino_to_hf.py: tiny = Swin-T (embed 96, depths
        # 2/2/6/2, heads 3/6/12/24, window 7, 224); base = Swin-B (128, 2/2/18/2, 4/8/16/32, window 12, 384);
        # out_indices [2, 3, 4]. Text encoder: BertConfig() = bert-base-uncased. The rest: GroundingDinoConfig
        # defaults (900 queries, 6+6 layers, d_model 256, 4 feature levels, max_text_len 256).
        swin_sizes: dict[str, Any] = (
            {
                "embed_dim": 128,
                "depths": [2, 2, 18, 2],
                "num_heads": [4, 8, 16, 32],
                "window_size": 12,
                "image_size": 384,
            }
            if name == "grounding-dino-base"
            else {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7}
        )
        tokenizer = _bert_tokenizer(30522)
        text = BertConfig(vocab_size=30522)
        config = GroundingDinoConfig(backbone_config=_swin(swin_sizes), text_config=text)
        # The published preprocessor_config.json: the GroundingDinoImageProcessor defaults.
        image_size = {"shortest_edge": 800, "longest_edge": 1333}
    else:
        tokenizer = _bert_tokenizer(None)
        swin_sizes = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 2}
        # max_position_embeddings (512) and max_text_len (256) stay real, so prompt-length limits match.
        text = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
        config = GroundingDinoConfig(
            backbone_config=_swin(swin_sizes),
            text_config=text,
            num_queries=20,
            encoder_layers=1,
            decoder_layers=2,  # the fewest GroundingDinoForObjectDetection's bbox_embed weight tying takes
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            d_model=32,  # the neck's GroupNorm has 32 groups
            encoder_n_points=1,
            decoder_n_points=1,
        )
        image_size = {"shortest_edge": 64, "longest_edge": 96}
    processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil(size=image_size), tokenizer)
    return _Recipe(GroundingDinoForObjectDetection, config, processor.save_pretrained)


def _swin(sizes: dict[str, Any]) -> SwinConfig:
    """A Swin backbone config feeding GroundingDINO stages 2-4 (its three multi-scale inputs)."""
    return SwinConfig(**{**sizes, "out_indices": [2, 3, 4]})


def _sam(name: str, size: Size) -> _Recipe:
    if size == "real":
        # Vision encoders per transformers' convert_sam_to_hf.py and segment-anything's build_sam.py: vit_b =
        # SamVisionConfig defaults (768 wide, 12 layers, 12 heads, global attention at 2/5/8/11); vit_l:
        # 1024, 24, 16, 5/11/17/23; vit_h: 1280, 32, 16, 7/15/23/31. Prompt encoder, mask decoder: defaults.
        vision_sizes: dict[str, dict[str, Any]] = {
            "sam-vit-base": {},
            "sam-vit-large": {
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "global_attn_indexes": [5, 11, 17, 23],
            },
            "sam-vit-huge": {
                "hidden_size": 1280,
                "num_hidden_layers": 32,
                "num_attention_heads": 16,
                "global_attn_indexes": [7, 15, 23, 31],
            },
        }
        config = SamConfig(vision_config=SamVisionConfig(**vision_sizes[name]))
        image_processor = SamImageProcessorPil()  # 1024 longest side padded to 1024x1024; masks 256
    else:
        image, patch, hidden = 64, 16, 16
        vision = SamVisionConfig(
            hidden_size=16,
            output_channels=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image,
            patch_size=patch,
            window_size=2,
            global_attn_indexes=[1],
            num_pos_feats=hidden // 2,
            mlp_dim=32,
        )
        config = SamConfig(
            vision_config=vision,
            prompt_encoder_config={"hidden_size": hidden, "image_size": image, "patch_size": patch},
            mask_decoder_config=_two_way_decoder(hidden),
        )
        low_res = 4 * image // patch  # the mask decoder upsamples the image embedding 4x
        image_processor = SamImageProcessorPil(
            size={"longest_edge": image},
            pad_size={"height": image, "width": image},
            mask_size={"longest_edge": low_res},
            mask_pad_size={"height": low_res, "width": low_res},
        )
    # SamVisionConfig.initializer_range is 1e-10 (and so is the published config.json). Drawn at that
    # scale, the encoder's activations shrink to ~1e-5 after its LayerNorms and CPU matmuls on them run ~5x
    # slower than on trained weights (63 s instead of ~11 s for vit-base at 1024 px). So draw at 0.02 and
    # write 1e-10 back into the config.
    assert isinstance(config.vision_config, SamVisionConfig)
    published_range = config.vision_config.initializer_range
    config.vision_config.initializer_range = 0.02
    return _Recipe(
        SamModel,
        config,
        SamProcessor(image_processor).save_pretrained,
        config_after_init={"vision_config.initializer_range": published_range},
    )


def _two_way_decoder(hidden: int) -> dict[str, int]:
    """A small SAM-style mask decoder (two-way transformer, 2 layers as in every real one)."""
    return {
        "hidden_size": hidden,
        "mlp_dim": 2 * hidden,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": hidden,
    }


def _memory(hidden: int, rope_size: int) -> dict[str, Any]:
    """Small memory attention/encoder settings of the video configs (sam2_video, sam3's tracker)."""
    return {
        "memory_attention_hidden_size": hidden,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 2 * hidden,
        "memory_attention_rope_feat_sizes": [rope_size, rope_size],
        "memory_encoder_hidden_size": hidden,
        "memory_encoder_output_channels": hidden // 2,
        "mask_downsampler_embed_dim": hidden,
        "memory_fuser_num_layers": 1,
        "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 2 * hidden,
    }


# SAM 2.1 Hiera trunks per transformers' convert_sam2_to_hf.py (= sam2's configs/sam2.1/sam2.1_hiera_*.yaml).
_HIERA: dict[str, dict[str, Any]] = {
    "sam2.1-hiera-tiny": {},  # the Sam2HieraDetConfig defaults: 96 wide, blocks 1/2/7/2, global 5/7/9
    "sam2.1-hiera-small": {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]},
    "sam2.1-hiera-base-plus": {
        "hidden_size": 112,
        "embed_dim_per_stage": [112, 224, 448, 896],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 3, 16, 3],
        "global_attention_blocks": [12, 16, 20],
        "window_positional_embedding_background_size": [14, 14],
    },
    "sam2.1-hiera-large": {
        "hidden_size": 144,
        "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 6, 36, 4],
        "global_attention_blocks": [23, 33, 43],
        "window_positional_embedding_background_size": [7, 7],
        "window_size_per_stage": [8, 4, 16, 8],
    },
}


def _sam2(name: str, size: Size) -> _Recipe:
    if size == "real":
        # Published as sam2_video: Sam2VideoConfig defaults (memory attention and encoder) around the trunk;
        # the FPN neck takes the trunk's stage widths, deepest first.
        hiera = Sam2HieraDetConfig(**_HIERA[name])
        widths = list(hiera.embed_dim_per_stage or ())
        vision = Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=widths[::-1])
        config = Sam2VideoConfig(vision_config=vision)
        image, mask = 1024, 256
    else:
        image, patch, hidden = 64, 16, 16
        dims = [8, 16, 32, 64]
        hiera = Sam2HieraDetConfig(
            hidden_size=dims[0],
            image_size=[image, image],
            # A global-attention block must not open a pooling stage (its window would pool down to 0).
            blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=dims,
            num_attention_heads_per_stage=[1, 1, 1, 1],
            window_size_per_stage=[4, 4, 2, 2],
            global_attention_blocks=[3],
            window_positional_embedding_background_size=[2, 2],
        )
        stride4 = image // 4  # after the trunk's stride-4 patch embedding
        vision = Sam2VisionConfig(
            backbone_config=hiera,
            backbone_channel_list=dims[::-1],
            backbone_feature_sizes=[[stride4 >> i, stride4 >> i] for i in range(3)],
            fpn_hidden_size=hidden,
        )
        config = Sam2VideoConfig(
            vision_config=vision,
            prompt_encoder_config={"hidden_size": hidden, "image_size": image, "patch_size": patch},
            mask_decoder_config=_two_way_decoder(hidden),
            image_size=image,
            **_memory(hidden, image // patch),
        )
        mask = 4 * image // patch
    normalise = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    processor = _sam_family_processor("Sam2", normalise, image, mask, None)
    return _Recipe(Sam2VideoModel, config, processor)


def _sam3(name: str, size: Size) -> _Recipe:
    if size == "real":
        # Published as sam3_video. Sam3Config defaults are facebook/sam3's detector: ViT 1024 wide, 32 layers
        # at 1008 px (patch 14, global attention at 7/15/23/31), CLIP text encoder 1024x24 with 49408 tokens,
        # DETR encoder/decoder 6+6 layers with 200 queries; Sam3VideoConfig adds the tracker.
        tokenizer = _clip_tokenizer(49408)
        config = Sam3VideoConfig()
        image, mask = 1008, 288
    else:
        tokenizer = _clip_tokenizer(None)
        image, patch, hidden = 56, 14, 16
        grid = image // patch
        vision = {
            "model_type": "sam3_vision_model",
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": image,
                "patch_size": patch,
                "window_size": 2,
                "global_attn_indexes": [1],
                "pretrain_image_size": image // 2,
            },
            "fpn_hidden_size": hidden,
            # The neck rescales the patch grid by 4, 2, 1 (and 0.5, unused by the heads).
            "backbone_feature_sizes": [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        }
        text = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            projection_dim=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        small = {"hidden_size": hidden, "num_attention_heads": 2, "intermediate_size": 2 * hidden}
        detector = Sam3Config(
            vision_config=vision,
            text_config=text,
            geometry_encoder_config={**small, "num_layers": 1},
            detr_encoder_config={**small, "num_layers": 1},
            detr_decoder_config={**small, "num_layers": 1, "num_queries": 20},
            mask_decoder_config={"hidden_size": hidden, "num_attention_heads": 2},
        )
        tracker = {
            "vision_config": vision,
            "image_size": image,
            "prompt_encoder_config": {"hidden_size": hidden, "image_size": image, "patch_size": patch},
            "mask_decoder_config": _two_way_decoder(hidden),
            **_memory(hidden, grid),
        }
        config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)
        mask = 4 * grid
    normalise = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = _sam_family_processor("Sam3", normalise, image, mask, tokenizer)
    return _Recipe(Sam3VideoModel, config, processor)


def _sam_family_processor(
    family: str,
    normalise: dict[str, list[float]],
    target_size: int,
    mask_size: int,
    tokenizer: PreTrainedTokenizerBase | None,
) -> Callable[[Path], object]:
    """Saves a Sam2Processor/Sam3Processor (``family`` "Sam2"/"Sam3"): by ``save_pretrained`` where
    torchvision lets the image processor be built, else by writing the ``processor_config.json`` that
    ``save_pretrained`` writes (same bytes)."""
    processor_class = f"{family}Processor"
    image: dict[str, Any] = {
        **normalise,
        "image_processor_type": f"{family}ImageProcessor",
        "mask_size": {"height": mask_size, "width": mask_size},
        "size": {"height": target_size, "width": target_size},
    }

    def save(folder: Path) -> object:
        import transformers

        image_cls = getattr(transformers, image["image_processor_type"])
        try:
            image_processor = image_cls(size=image["size"], mask_size=image["mask_size"])
        except ImportError:  # the torchvision-less placeholder class
            pass
        else:
            parts = [image_processor] if tokenizer is None else [image_processor, tokenizer]
            return getattr(transformers, processor_class)(*parts).save_pretrained(folder)
        if tokenizer is not None:  # what ProcessorMixin.save_pretrained does with it
            tokenizer._set_processor_class(processor_class)
            tokenizer.save_pretrained(folder)
        defaults = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True}
        image_dict = {**defaults, **image, "resample": 2, "rescale_factor": 1 / 255}  # bilinear, 1/255
        content = {
            "image_processor": image_dict,
            "point_pad_value": -10,
            "processor_class": processor_class,
            "target_size": target_size,
        }
        path = folder / "processor_config.json"
        path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return [str(path)]

    return save


_RECIPES: dict[str, Callable[[str, Size], _Recipe]] = {
    "grounding-dino": _grounding_dino,
    "sam": _sam,
    "sam2": _sam2,
    "sam3": _sam3,
}


# --------------------------------------------------------------------------------------------------------
# Public API.


def build_random_model(
    name: str, size: Size = "tiny", seed: int = 0, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, Callable[[Path], object]]:
    """The random-weight model of catalog name ``name`` (in eval mode) and a function that saves its processor
    into a folder. Weights depend only on ``seed``; the global torch RNG is left as it was. ``device="meta"``
    builds the architecture without weights (to count parameters of a real size in no time)."""
    spec = model_spec(name)
    if size not in ("tiny", "real"):
        raise ValueError(f"size must be 'tiny' or 'real', not {size!r}")
    recipe = _RECIPES[spec.architecture](name, size)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = recipe.model_class(recipe.config)
    for dotted, value in recipe.config_after_init.items():
        *parents, attribute = dotted.split(".")
        target = model.config
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, attribute, value)
    return model.eval(), recipe.save_processor


def save_random_model(name: str, folder: Path, size: Size = "tiny", seed: int = 0) -> Path:
    """Write catalog model ``name`` with seeded random weights, and its processor, into ``folder``.

    The folder then loads with ``XModel.from_pretrained(folder, local_files_only=True)`` and
    ``XProcessor.from_pretrained(folder, local_files_only=True)``, X being GroundingDinoForObjectDetection /
    GroundingDinoProcessor, SamModel / SamProcessor, Sam2Model / Sam2Processor or Sam3Model / Sam3Processor.
    Weights are float32 safetensors, as published. The same ``seed`` writes the same bytes. Returns
    ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, save_processor = build_random_model(name, size, seed)
    model.save_pretrained(folder)
    save_processor(folder)
    return folder
