"""MoA-DepthCLIP: frozen CLIP ViT-B/32 + Mixture-of-Adapters + scene context + hybrid head.

Design (docs/architecture.md): MoA after blocks 2, 5, 8, 11 on all tokens; last four blocks
trainable; features = mean of the four MoA outputs' patch tokens; scene-context vector from the
CLIP text encoder, computed once and kept as a buffer, fused by zero-initialized FiLM; 128
log-spaced bins over [0.1, 10] m + a regression residual; confidence = 1 − normalized entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.clip_backbone import (
    VitTower,
    check_pretrained,
    create_clip,
    encode_prompts,
)
from moa_depth_ros.models.config import (
    image_size_hw,
    is_int_list,
    is_nonempty_str_list,
    is_nonnegative_number,
    is_positive_int,
    is_positive_number,
    resolve_config,
)
from moa_depth_ros.models.heads import (
    ConvexUpsampler,
    FiLM,
    HybridBinHead,
    bin_confidence,
    make_bin_centers,
)
from moa_depth_ros.models.moa import MixtureOfAdapters, load_balance_loss
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import CLIP_MEAN, CLIP_STD, Preprocessing

DEFAULTS = {
    "clip_model": "ViT-B-32-quickgelu",
    "clip_pretrained": "openai",
    "image_size": 224,
    "moa_blocks": [2, 5, 8, 11],
    "num_experts": 4,
    "adapter_dim": 64,
    "gate_hidden": 128,
    "trainable_blocks": [8, 9, 10, 11],
    "context_prompts": ["a photo of an indoor scene"],
    "num_bins": 128,
    # The range of the bins (the model's own output range; the default output clamp).
    "min_depth": 0.1,
    "max_depth": 10.0,
    "bin_spacing": "log",
    "max_log_residual": 0.5,
    "upsample": "bilinear",
    "convex_factor": 8,
    "load_balance_weight": 0.0,
}

CHECKS = {
    "clip_model": (lambda v: isinstance(v, str) and v, "an open_clip ViT model name"),
    "clip_pretrained": (check_pretrained, "'openai', another open_clip tag, 'none', or a file"),
    "image_size": (image_size_hw, "a positive int or [height, width]"),
    "moa_blocks": (lambda v: is_int_list(v) and len(v) > 0, "a non-empty list of block indices"),
    "num_experts": (is_positive_int, "a positive int"),
    "adapter_dim": (is_positive_int, "a positive int"),
    "gate_hidden": (is_positive_int, "a positive int"),
    "trainable_blocks": (is_int_list, "a list of block indices"),
    "context_prompts": (is_nonempty_str_list, "a non-empty list of prompt strings"),
    "num_bins": (lambda v: is_positive_int(v) and v >= 2, "an int >= 2"),
    "min_depth": (is_positive_number, "a positive number of metres"),
    "max_depth": (is_positive_number, "a positive number of metres"),
    "bin_spacing": (lambda v: v in ("log", "linear"), "'log' or 'linear'"),
    "max_log_residual": (is_nonnegative_number, "a number >= 0"),
    "upsample": (lambda v: v in ("bilinear", "convex"), "'bilinear' or 'convex'"),
    "convex_factor": (is_positive_int, "a positive int"),
    "load_balance_weight": (is_nonnegative_number, "a number >= 0"),
}


def resolve(config: dict) -> dict:
    cfg = resolve_config("moa_depthclip", config, DEFAULTS, CHECKS)
    check_depth_range(
        cfg["min_depth"],
        cfg["max_depth"],
        "config keys 'min_depth', 'max_depth' of 'moa_depthclip'",
    )
    return cfg


class MoADepthCLIP(DepthModel):
    model_type = "moa_depthclip"

    def __init__(self, cfg: dict, load_pretrained: bool = True):
        image_hw = image_size_hw(cfg["image_size"])
        super().__init__(cfg, Preprocessing(image_hw, CLIP_MEAN, CLIP_STD, "bicubic"))
        clip = create_clip(
            cfg["clip_model"],
            cfg["clip_pretrained"] if load_pretrained else "none",
            image_hw,
            weights_follow=not load_pretrained,
        )
        self.tower = VitTower(clip.visual)
        _check_geometry(self.tower, cfg, image_hw)
        dim = self.tower.width
        context_dim = clip.text_projection.shape[-1] if clip.text_projection is not None else dim
        # The context vector is computed once here; checkpoints store it (no text encoder needed).
        context = torch.zeros(context_dim)
        if load_pretrained:
            context = encode_prompts(clip, cfg["clip_model"], cfg["context_prompts"]).mean(0)
            context = context / context.norm()
        self.register_buffer("scene_context", context, persistent=True)
        del clip  # drops the text tower

        self.moa_blocks = list(cfg["moa_blocks"])
        self.adapters = nn.ModuleDict(
            {
                str(i): MixtureOfAdapters(
                    dim, cfg["num_experts"], cfg["adapter_dim"], cfg["gate_hidden"]
                )
                for i in self.moa_blocks
            }
        )
        self.film = FiLM(context_dim, dim)
        centers = make_bin_centers(
            cfg["num_bins"], cfg["min_depth"], cfg["max_depth"], cfg["bin_spacing"]
        )
        self.head = HybridBinHead(dim, centers, cfg["max_log_residual"])
        self.upsampler = (
            ConvexUpsampler(dim, cfg["convex_factor"]) if cfg["upsample"] == "convex" else None
        )
        self.tower.set_trainable_blocks(cfg["trainable_blocks"])

    @property
    def bin_centers(self) -> torch.Tensor:
        return self.head.bin_centers

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        backbone = [p for p in self.tower.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        return {"new_modules": new, "backbone_blocks": backbone}

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean of the MoA taps' patch tokens (B×N×D), fused with the scene context; gates."""
        tokens = self.tower.embed(images)
        taps, gates = [], []
        for index in range(len(self.tower.blocks)):
            tokens = self.tower.run_block(index, tokens)
            if index in self.moa_blocks:
                tokens, gate = self.adapters[str(index)](tokens)
                taps.append(tokens[:, 1:])  # drop CLS
                gates.append(gate)
            if index >= max(self.moa_blocks):
                break  # later blocks would not change the features
        features = torch.stack(taps).mean(dim=0)
        context = self.scene_context.to(features.dtype).expand(features.shape[0], -1)
        return self.film(features, context), gates

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:
        B, _, H, W = images.shape
        gh, gw = self.tower.grid_size((H, W))
        features, gates = self.features(images)
        logits, depth = self.head(features)
        bin_logits = logits.transpose(1, 2).reshape(B, -1, gh, gw)
        depth = depth.reshape(B, 1, gh, gw)
        confidence = bin_confidence(bin_logits.float().softmax(dim=1))
        if self.upsampler is not None:
            # Convex upsampling in log space keeps depth positive and inside the bin range.
            depth = self.upsampler(depth.log(), features).exp()
            confidence = F.interpolate(confidence, size=depth.shape[-2:], mode="bilinear")
        aux = None
        if self.config["load_balance_weight"] > 0:
            aux = self.config["load_balance_weight"] * sum(map(load_balance_loss, gates))
        return DepthOutput(depth=depth, confidence=confidence, bin_logits=bin_logits, aux_loss=aux)


def _check_geometry(tower: VitTower, cfg: dict, image_hw: tuple[int, int]) -> None:
    """Block indices exist and the image size is a multiple of the patch size."""
    num_blocks = len(tower.blocks)
    for key in ("moa_blocks", "trainable_blocks"):
        bad = [i for i in cfg[key] if i >= num_blocks]
        if bad:
            raise ValueError(
                f"bad value for config key '{key}' of model type 'moa_depthclip': block {bad[0]} "
                f"does not exist ({cfg['clip_model']} has {num_blocks} blocks)"
            )
    ph, pw = tower.patch_size
    if image_hw[0] % ph or image_hw[1] % pw:
        raise ValueError(
            f"bad value for config key 'image_size' of model type 'moa_depthclip': {image_hw} is "
            f"not a multiple of the patch size {ph}×{pw}"
        )
