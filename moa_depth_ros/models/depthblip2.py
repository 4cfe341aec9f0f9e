"""DepthBLIP-2 (especiallyW/DepthBLIP-2): zero-shot depth from a BLIP-2 / InstructBLIP Q-Former
asked about the 7 DepthCLIP distance words, optionally with learned bins.

As the reference (v2 HEAD 6b05261, method 'second'; docs/methods.md):

- image (224×224, bilinear, ImageNet mean/std) → vision encoder → its post-layernorm on all
  tokens (= LAVIS ``ln_vision``);
- for each class k the text ``"this object is <class>"``, the 32 learned queries in front of the
  text tokens, one multimodal Q-Former pass (self-attention over both, cross-attention to the
  image tokens); ``last_hidden_state[:, :32]`` averaged over the queries → 768-d per class. All
  7 prompts run in one Q-Former call over B·7 right-padded sequences and the vision encoder
  runs once (the reference ran it 7 times with the same result);
- grouping: v2 reshapes 768 → (3, 16, 16) and takes the max over the 3 contiguous groups; v1
  reshapes (16, 16, 3) (interleaved groups); logits = features / T, softmax over the 7 classes,
  depth = Σ p·bin; flip TTA at the 16×16 grid; bilinear (align_corners=True) to the output.
- learned bins (``learned_bins``): an MLP 7→64→128→256→Dropout→128→Dropout→64→7 with Sigmoid s
  on the fixed initial bins, bins = b_min + s²·(b_max − b_min); image-independent; the only
  trainable part.

Weights come from a local Hugging Face directory (safetensors shards): only the vision encoder,
the Q-Former (and BLIP-2's text embeddings) and the query tokens are read, never the language
model of ``instructblip-vicuna-7b``. The prompt token ids are fixed constants (each prompt word
is one bert-base-uncased WordPiece), so no tokenizer is needed at run time; they are stored in
checkpoints with the query tokens, so one file is self-contained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.config import (
    image_size_hw,
    is_int_list,
    is_positive_number,
    resolve_config,
)
from moa_depth_ros.models.depthclip import DEPTH_CLASSES
from moa_depth_ros.models.heads import bin_confidence
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_LIBRARIES,
    Preprocessing,
)

VARIANTS = ("instructblip", "blip2")
GROUPINGS = ("v2", "v1")
DEPTHBLIP2_BINS = [1.00, 1.75, 2.25, 2.50, 2.75, 3.00, 3.50]
NUM_QUERIES = 32

#: bert-base-uncased ids: [CLS] this object is <class> [SEP] (each word one WordPiece).
CLS, SEP, PAD = 101, 102, 0
PROMPT_PREFIX = (2023, 4874, 2003)  # this object is
CLASS_TOKENS = {
    "giant": (5016,),
    "extremely close": (5186, 2485),
    "close": (2485,),
    "not in distance": (2025, 1999, 3292),
    "a little remote": (1037, 2210, 6556),
    "far": (2521,),
    "unseen": (16100,),
}

#: Architecture presets (HF sub-config fields). "full" is InstructBLIP / BLIP-2 ViT-g: the
#: classes' defaults (EVA ViT-g/14, 39 layers, 1408 wide; BERT-base Q-Former, vocab 30523).
#: "tiny" is for tests (768 → 48 = 3·4·4 so the grouping still has 3 groups).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {"vision": {}, "qformer": {"vocab_size": 30523}},
    "tiny": {
        "vision": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": 56, "patch_size": 14,
            "initializer_range": 0.02,  # the classes' default 1e-10 makes random weights ~0
        },
        "qformer": {
            "vocab_size": 30523, "hidden_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 64,
        },
    },
}  # fmt: skip

#: LAVIS ``ln_vision``: the LayerNorm after the ViT (``post_layernorm`` in the HF port).
LN_VISION_EPS = 1e-5

DEFAULTS = {
    "variant": "instructblip",
    "grouping": "v2",
    "pretrained": "none",  # a local HF model directory, or "none" (random weights)
    "size": "full",  # preset when vision_config / qformer_config are not given
    "vision_config": None,
    "qformer_config": None,
    "image_size": None,  # None: the vision encoder's (224 at full size)
    "feature_grid": None,  # [groups, h, w]; None: [3, 16, 16] at full size; KITTI [1, 16, 48]
    "classes": DEPTH_CLASSES,
    "bins": DEPTHBLIP2_BINS,
    "temperature": 0.5,  # v2 NYU (KITTI 0.8; v1 0.05)
    "learned_bins": False,
    "flip_tta": True,
    "resize": "pil",  # the reference resizes PIL images (bilinear)
    # The default output clamp (the depths it can give are the bins').
    "min_depth": 1e-3,
    "max_depth": 10.0,
}


def _is_pretrained(value: object) -> bool:
    return value == "none" or (isinstance(value, str) and Path(value).is_dir())


CHECKS = {
    "variant": (lambda v: v in VARIANTS, " or ".join(VARIANTS)),
    "grouping": (lambda v: v in GROUPINGS, " or ".join(GROUPINGS)),
    "pretrained": (_is_pretrained, "'none' or a local Hugging Face model directory"),
    "size": (lambda v: v in PRESETS, " or ".join(PRESETS)),
    "vision_config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
    "qformer_config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
    "image_size": (lambda v: v is None or image_size_hw(v), "a positive int or [height, width]"),
    "feature_grid": (
        lambda v: v is None or (is_int_list(v) and len(v) == 3 and all(x > 0 for x in v)),
        "[groups, height, width]",
    ),
    "classes": (lambda v: all(c in CLASS_TOKENS for c in v), f"words of {sorted(CLASS_TOKENS)}"),
    "bins": (lambda v: all(is_positive_number(b) for b in v), "a list of depths in metres"),
    "temperature": (is_positive_number, "a positive number"),
    "learned_bins": (lambda v: isinstance(v, bool), "true or false"),
    "flip_tta": (lambda v: isinstance(v, bool), "true or false"),
    "resize": (lambda v: v in RESIZE_LIBRARIES, " or ".join(RESIZE_LIBRARIES)),
    "min_depth": (is_positive_number, "a positive number of metres"),
    "max_depth": (is_positive_number, "a positive number of metres"),
}


def _read_hf_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable Hugging Face config ({err})") from err


def resolve(config: dict) -> dict:
    cfg = resolve_config("depthblip2", config, DEFAULTS, CHECKS)
    name = "model type 'depthblip2'"
    check_depth_range(cfg["min_depth"], cfg["max_depth"], f"config keys of {name}")
    if len(cfg["bins"]) != len(cfg["classes"]) or len(cfg["bins"]) < 2:
        raise ValueError(f"bad value for config key 'bins' of {name}: one bin per class, >= 2")
    if cfg["pretrained"] != "none" and (
        cfg["vision_config"] is None or cfg["qformer_config"] is None
    ):
        # The architecture of the weights comes with them; stored so checkpoints rebuild it.
        hf = _read_hf_config(Path(cfg["pretrained"]))
        for key in ("vision_config", "qformer_config"):
            if cfg[key] is None:
                if key not in hf:
                    raise ValueError(f"{cfg['pretrained']}/config.json has no '{key}'")
                cfg[key] = hf[key]
    preset = PRESETS[cfg["size"]]
    vision = {**preset["vision"], **(cfg["vision_config"] or {})}
    qformer = {**preset["qformer"], **(cfg["qformer_config"] or {})}
    qformer["encoder_hidden_size"] = vision.get("hidden_size", 1408)
    if cfg["variant"] == "blip2":
        qformer["use_qformer_text_input"] = True  # the ITM path embeds text in the Q-Former
    cfg["vision_config"], cfg["qformer_config"] = vision, qformer
    if cfg["image_size"] is None:
        cfg["image_size"] = vision.get("image_size", 224)
    if cfg["feature_grid"] is None:  # three groups of a square map, as the NYU reference
        side = math.isqrt(qformer.get("hidden_size", 768) // 3)
        cfg["feature_grid"] = [3, side, side]
    groups, gh, gw = cfg["feature_grid"]
    if groups * gh * gw != qformer.get("hidden_size", 768):
        raise ValueError(
            f"bad value for config key 'feature_grid' of {name}: {groups}·{gh}·{gw} must equal "
            f"the Q-Former hidden size {qformer.get('hidden_size', 768)}"
        )
    return cfg


def prompt_token_ids(classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(K×L input ids, K×L attention mask) of "[CLS] this object is <class> [SEP]", right-padded."""
    rows = [(CLS, *PROMPT_PREFIX, *CLASS_TOKENS[c], SEP) for c in classes]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    return ids, mask


def group_features(
    features: torch.Tensor, grid: tuple[int, int, int], grouping: str
) -> torch.Tensor:
    """B×K×C per-class features → B×K×h×w logits before temperature: the max over the groups.

    v2: C = (groups, h, w) row-major (contiguous groups); v1: C = (h, w, groups) (interleaved).
    """
    B, K, _ = features.shape
    groups, gh, gw = grid
    if grouping == "v2":
        grouped = features.reshape(B, K, groups, gh, gw)
    else:
        grouped = features.reshape(B, K, gh, gw, groups).permute(0, 1, 4, 2, 3)
    return grouped.max(dim=2).values


class LearnedBins(nn.Module):
    """DepthBLIP-2's ``flag=2`` MLP: bins = b_min + s²·(b_max − b_min), s = MLP(initial bins)."""

    def __init__(self, bins: torch.Tensor):
        super().__init__()
        k = bins.numel()
        self.mlp = nn.Sequential(
            nn.Linear(k, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
            nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, k), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, initial: torch.Tensor) -> torch.Tensor:
        low, high = initial.min(), initial.max()
        return low + self.mlp(initial[None])[0] ** 2 * (high - low)


def _hf_classes(variant: str):
    if variant == "instructblip":
        from transformers import (
            InstructBlipQFormerConfig,
            InstructBlipQFormerModel,
            InstructBlipVisionConfig,
            InstructBlipVisionModel,
        )

        return (
            InstructBlipVisionConfig,
            InstructBlipVisionModel,
            InstructBlipQFormerConfig,
            InstructBlipQFormerModel,
        )
    from transformers import (
        Blip2QFormerConfig,
        Blip2QFormerModel,
        Blip2VisionConfig,
        Blip2VisionModel,
    )

    return Blip2VisionConfig, Blip2VisionModel, Blip2QFormerConfig, Blip2QFormerModel


def build_hf_modules(cfg: dict, on_meta: bool = False) -> dict[str, nn.Module]:
    """The vision encoder, the Q-Former (and BLIP-2's text embeddings) of ``cfg``; on the meta
    device (no memory, no init) when ``on_meta``."""
    vision_cfg_cls, vision_cls, qformer_cfg_cls, qformer_cls = _hf_classes(cfg["variant"])
    vision_cfg = vision_cfg_cls(**cfg["vision_config"])
    qformer_cfg = qformer_cfg_cls(**cfg["qformer_config"])
    with torch.device("meta") if on_meta else torch.device("cpu"):
        modules = {"vision": vision_cls(vision_cfg), "qformer": qformer_cls(qformer_cfg)}
        if cfg["variant"] == "blip2":
            from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

            modules["text_embeddings"] = Blip2TextEmbeddings(qformer_cfg)
    # The HF port gives the post-ViT LayerNorm the blocks' eps (1e-6); the reference (LAVIS
    # ``ln_vision``) uses LayerNorm's default 1e-5.
    modules["vision"].post_layernorm.eps = LN_VISION_EPS
    return modules


def _weight_map(directory: Path) -> dict[str, str]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    single = directory / "model.safetensors"
    if not single.is_file():
        raise ValueError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single.name)


#: Our module name → the prefix of its tensors in the HF checkpoint.
_HF_PREFIXES = {
    "vision": "vision_model.",
    "qformer": "qformer.",
    "text_embeddings": "embeddings.",
}


def read_hf_weights(directory: Path, variant: str) -> dict[str, torch.Tensor]:
    """Only the tensors DepthBLIP-2 needs, read shard by shard (the language model's shards are
    never opened), under our module names."""
    from safetensors import safe_open

    wanted = {"vision", "qformer"} | ({"text_embeddings"} if variant == "blip2" else set())
    by_file: dict[str, list[tuple[str, str]]] = {}
    for key, filename in _weight_map(directory).items():
        if key.endswith("position_ids"):
            continue  # an index buffer older checkpoints saved
        if key == "query_tokens":
            by_file.setdefault(filename, []).append((key, "query_tokens"))
            continue
        for module, prefix in _HF_PREFIXES.items():
            if module in wanted and key.startswith(prefix):
                by_file.setdefault(filename, []).append((key, f"{module}.{key[len(prefix) :]}"))
    state = {}
    for filename, keys in by_file.items():
        with safe_open(str(directory / filename), framework="pt", device="cpu") as handle:
            for key, ours in keys:
                state[ours] = handle.get_tensor(key)
    if "query_tokens" not in state:
        raise ValueError(
            f"{directory}: no 'query_tokens' tensor (not a BLIP-2 / InstructBLIP model)"
        )
    return state


class DepthBLIP2(DepthModel):
    model_type = "depthblip2"

    def __init__(self, cfg: dict, load_pretrained: bool = True):
        image_hw = image_size_hw(cfg["image_size"])
        super().__init__(
            cfg, Preprocessing(image_hw, IMAGENET_MEAN, IMAGENET_STD, "bilinear", cfg["resize"])
        )
        from_file = cfg["pretrained"] != "none" and load_pretrained
        # Weights that will all be overwritten (a HF directory now, a checkpoint later) are not
        # initialized: ~1.2B parameters would take seconds for nothing.
        on_meta = from_file or not load_pretrained
        modules = build_hf_modules(cfg, on_meta=on_meta)
        self.vision = modules["vision"]
        self.qformer = modules["qformer"]
        self.text_embeddings = modules.get("text_embeddings")
        hidden = cfg["qformer_config"].get("hidden_size", 768)
        self.query_tokens = nn.Parameter(
            torch.empty(1, NUM_QUERIES, hidden, device="meta" if on_meta else "cpu")
        )
        if on_meta:
            self.to_empty(device="cpu")
            self._restore_index_buffers()
        else:
            nn.init.normal_(self.query_tokens, std=0.02)  # as LAVIS initializes the queries
        ids, mask = prompt_token_ids(cfg["classes"])
        self.register_buffer("prompt_ids", ids, persistent=True)
        self.register_buffer("prompt_mask", mask, persistent=True)
        self.register_buffer("initial_bins", torch.tensor(cfg["bins"], dtype=torch.float32))
        self.bin_mlp = LearnedBins(self.initial_bins) if cfg["learned_bins"] else None
        if from_file:
            self._load_hf(Path(cfg["pretrained"]))
        self.requires_grad_(False)
        if self.bin_mlp is not None:
            self.bin_mlp.requires_grad_(True)  # only the bins learn

    def _restore_index_buffers(self) -> None:
        """Non-persistent index buffers (position_ids) are not in any state dict: rebuild them."""
        for module in self.modules():
            if "position_ids" in getattr(module, "_buffers", {}):
                length = module._buffers["position_ids"].shape[-1]
                module._buffers["position_ids"] = torch.arange(length).expand(1, -1)

    def _load_hf(self, directory: Path) -> None:
        state = read_hf_weights(directory, self.config["variant"])
        expected = {
            k
            for k in self.state_dict()
            if k.split(".")[0] in ("vision", "qformer", "text_embeddings")
        } | {"query_tokens"}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"{directory}: missing tensor '{missing[0]}' ({len(missing)} missing)")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> DepthBLIP2:
        super().train(mode)
        # Frozen parts stay in eval mode (no Q-Former dropout while the bins learn; the
        # reference left it on, a side effect of LAVIS's model.train()).
        for module in (self.vision, self.qformer, self.text_embeddings):
            if module is not None:
                module.eval()
        return self

    @property
    def bin_centers(self) -> torch.Tensor:
        return self.bins()

    def bins(self) -> torch.Tensor:
        return self.bin_mlp(self.initial_bins) if self.bin_mlp is not None else self.initial_bins

    def class_features(self, images: torch.Tensor) -> torch.Tensor:
        """B×K×C: the Q-Former's query outputs for each prompt, averaged over the queries."""
        image_tokens = self.vision(pixel_values=images).last_hidden_state  # post-layernorm
        B, K = images.shape[0], self.prompt_ids.shape[0]
        tokens = image_tokens.repeat_interleave(K, dim=0)  # row b·K + k: image b, prompt k
        ids = self.prompt_ids.repeat(B, 1)
        queries = self.query_tokens.expand(B * K, -1, -1).to(tokens.dtype)
        ones = torch.ones(B * K, NUM_QUERIES, dtype=torch.long, device=images.device)
        attention = torch.cat([ones, self.prompt_mask.repeat(B, 1)], dim=1)
        image_mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=images.device)
        if self.text_embeddings is None:
            out = self.qformer(
                input_ids=ids,
                attention_mask=attention,
                query_embeds=queries,
                encoder_hidden_states=tokens,
                encoder_attention_mask=image_mask,
            )
        else:
            out = self.qformer(
                query_embeds=self.text_embeddings(input_ids=ids, query_embeds=queries),
                query_length=NUM_QUERIES,
                attention_mask=attention,
                encoder_hidden_states=tokens,
                encoder_attention_mask=image_mask,
            )
        features = out.last_hidden_state[:, :NUM_QUERIES].mean(dim=1)
        return features.reshape(B, K, -1)

    def _probabilities(self, images: torch.Tensor) -> torch.Tensor:
        grid = tuple(self.config["feature_grid"])
        logits = group_features(self.class_features(images), grid, self.config["grouping"])
        return (logits.float() / self.config["temperature"]).softmax(dim=1)

    output_align_corners = True  # as the reference upsamples

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:
        bins = self.bins().view(1, -1, 1, 1)
        if self.config["flip_tta"]:
            # The mirrored image in the same batch: one vision and one Q-Former pass.
            probs = self._probabilities(torch.cat([images, images.flip(-1)]))
            probs, mirrored = probs.chunk(2)
            depth = 0.5 * (
                (probs * bins).sum(1, keepdim=True)
                + (mirrored * bins).sum(1, keepdim=True).flip(-1)
            )
            probs = 0.5 * (probs + mirrored.flip(-1))
        else:
            probs = self._probabilities(images)
            depth = (probs * bins).sum(1, keepdim=True)
        return DepthOutput(depth=depth, confidence=bin_confidence(probs))
