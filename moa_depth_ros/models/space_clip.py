"""SPACE-CLIP (arXiv 2601.17657, taewan2002/SPACE-CLIP): a frozen CLIP ViT-B/16 read at several
depths by a semantic (FiLM) path and a structural path, decoded to metric depth.

Built exactly as the reference (HEAD 543eb5e; docs/methods.md):

- Backbone: open_clip ``ViT-B-16-quickgelu`` (OpenAI weights need QuickGELU) at 224×224, the
  whole image squashed (bicubic), CLIP mean/std, fully frozen, no positional-embedding
  interpolation. Taps: hidden[0] = tokens after ``ln_pre``, hidden[k] = output of block k-1;
  pooler = ``ln_post(CLS)`` without ``proj`` (HF ``CLIPVisionModel`` semantics).
- Semantic path: layers [12, 9, 6, 3], each FiLM-ed by Linear(768→256)-ReLU-Linear(256→1536)
  on the pooler (γ·x + β), 1×1 conv to [256, 128, 64, 32].
- Structural path: layers [2, 1, 0], no FiLM, 1×1 conv to [256, 128, 64], starting from the raw
  layer-2 map.
- Decoder: 4 gated stages 14 → 224, head Conv-BN-ReLU-Conv-ReLU (metric depth), auxiliary heads
  on stages 0–2 (training only). Outputs are resized bilinearly (align_corners=False).

The decoder's module names are the reference's (``film_param_generators``,
``main_decoder_blocks``, ...), so a reference-trained decoder ``state_dict`` loads as it is;
:func:`from_reference_state_dict` also maps the reference's HF CLIP backbone keys.
12,050,996 trainable parameters at full size.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.clip_backbone import VitTower, check_pretrained, create_clip
from moa_depth_ros.models.config import (
    image_size_hw,
    is_int_list,
    is_nonnegative_number,
    is_positive_int,
    is_positive_number,
    resolve_config,
)
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    RESIZE_LIBRARIES,
    Preprocessing,
)

DEFAULTS = {
    "clip_model": "ViT-B-16-quickgelu",
    "clip_pretrained": "openai",
    "image_size": 224,
    "main_path_indices": [12, 9, 6, 3],
    "structural_path_indices": [2, 1, 0],
    "decoder_channels": [256, 128, 64, 32],
    "film_hidden": 256,
    "decoder_dropout": 0.1,
    "use_film": True,
    "use_structural_pathway": True,
    "aux_heads": True,
    # torch: resized on the device; pil: as the reference's processor (checkpoints imported
    # from it use pil, moa-depth-import-space-clip).
    "resize": "torch",
    # The depth range the model is trained for: the default output clamp (its ReLU head
    # itself is unbounded).
    "min_depth": 1e-3,
    "max_depth": 10.0,
}

CHECKS = {
    "clip_model": (lambda v: isinstance(v, str) and v, "an open_clip ViT model name"),
    "clip_pretrained": (check_pretrained, "'openai', another open_clip tag, 'none', or a file"),
    "image_size": (image_size_hw, "a positive int or [height, width]"),
    "resize": (lambda v: v in RESIZE_LIBRARIES, " or ".join(RESIZE_LIBRARIES)),
    "main_path_indices": (lambda v: is_int_list(v) and len(v) > 0, "a list of layer indices"),
    "structural_path_indices": (is_int_list, "a list of layer indices"),
    "decoder_channels": (
        lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(map(is_positive_int, v)),
        "a list of positive channel counts",
    ),
    "film_hidden": (is_positive_int, "a positive int"),
    "decoder_dropout": (lambda v: is_nonnegative_number(v) and v < 1, "a number in [0, 1)"),
    "use_film": (lambda v: isinstance(v, bool), "true or false"),
    "use_structural_pathway": (lambda v: isinstance(v, bool), "true or false"),
    "aux_heads": (lambda v: isinstance(v, bool), "true or false"),
    "min_depth": (is_positive_number, "a positive number of metres"),
    "max_depth": (is_positive_number, "a positive number of metres"),
}


def resolve(config: dict) -> dict:
    cfg = resolve_config("space_clip", config, DEFAULTS, CHECKS)
    check_depth_range(
        cfg["min_depth"], cfg["max_depth"], "config keys 'min_depth', 'max_depth' of 'space_clip'"
    )
    stages = len(cfg["decoder_channels"])
    if len(cfg["main_path_indices"]) != stages:
        raise ValueError(
            "bad value for config key 'main_path_indices' of model type 'space_clip': needs one "
            f"layer per decoder stage ({stages})"
        )
    if len(cfg["structural_path_indices"]) > stages:
        raise ValueError(
            "bad value for config key 'structural_path_indices' of model type 'space_clip': at "
            f"most one layer per decoder stage ({stages})"
        )
    return cfg


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ResidualConvBlock(nn.Module):
    """conv-BN-ReLU-dropout-conv-BN, + input, ReLU."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.relu(self.norm1(self.conv1(x))))
        return F.relu(self.norm2(self.conv2(y)) + x)


class UpsampleBlock(nn.Module):
    """ConvTranspose 2×2 stride 2, then Conv3×3-BN-ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = nn.Sequential(*_conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.upsample(x))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MainDecoderBlock(nn.Module):
    """Upsample, gate the semantic (and structural) skip by 1 + sigmoid(conv1×1(up)), concat
    [up, semantic, structural], Conv3×3-BN-ReLU, residual block."""

    def __init__(self, cin: int, skip_ch: int, struct_ch: int, cout: int, dropout: float):
        super().__init__()
        self.upsample_low = UpsampleBlock(cin, cout)
        self.skip_clip_gate = nn.Sequential(nn.Conv2d(cout, skip_ch, 1), nn.Sigmoid())
        self.skip_struct_gate = (
            nn.Sequential(nn.Conv2d(cout, struct_ch, 1), nn.Sigmoid()) if struct_ch > 0 else None
        )
        self.fusion_conv = nn.Sequential(
            *_conv_bn_relu(cout + skip_ch + struct_ch, cout), ResidualConvBlock(cout, dropout)
        )

    def forward(
        self, low: torch.Tensor, skip: torch.Tensor, struct: torch.Tensor | None
    ) -> torch.Tensor:
        up = self.upsample_low(low)
        size = up.shape[-2:]
        parts = [up, _resize(skip, size) * (1.0 + self.skip_clip_gate(up))]
        if self.skip_struct_gate is not None and struct is not None:
            parts.append(_resize(struct, size) * (1.0 + self.skip_struct_gate(up)))
        return self.fusion_conv(torch.cat(parts, dim=1))


class StructuralPathwayBlock(nn.Module):
    """Upsample, concat the (resized) skip, Conv3×3-BN-ReLU."""

    def __init__(self, cin: int, skip_ch: int, cout: int):
        super().__init__()
        self.upsample_low = UpsampleBlock(cin, cout)
        self.fusion_conv = nn.Sequential(*_conv_bn_relu(cout + skip_ch, cout))

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.upsample_low(low)
        return self.fusion_conv(torch.cat([up, _resize(skip, up.shape[-2:])], dim=1))


class SpaceCLIP(DepthModel):
    model_type = "space_clip"
    prefers_channels_last = True

    def __init__(self, cfg: dict, load_pretrained: bool = True):
        image_hw = image_size_hw(cfg["image_size"])
        super().__init__(
            cfg, Preprocessing(image_hw, CLIP_MEAN, CLIP_STD, "bicubic", cfg["resize"])
        )
        clip = create_clip(
            cfg["clip_model"],
            cfg["clip_pretrained"] if load_pretrained else "none",
            image_hw,
            weights_follow=not load_pretrained,
        )
        visual = clip.visual
        del clip  # the text tower is never used
        visual.proj = None  # SPACE-CLIP reads the 768-d pooler, never the 512-d projection
        self.tower = VitTower(visual)
        self.tower.requires_grad_(False)
        self._check_geometry(image_hw)
        dim, channels = self.tower.width, list(cfg["decoder_channels"])
        self.main_indices = list(cfg["main_path_indices"])
        self.struct_indices = (
            list(cfg["structural_path_indices"]) if cfg["use_structural_pathway"] else []
        )
        hidden = cfg["film_hidden"]
        self.film_param_generators = (
            nn.ModuleList(
                nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * dim))
                for _ in self.main_indices
            )
            if cfg["use_film"]
            else None
        )
        self.main_path_projections = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in channels)
        # Registered before the structural lists, as in the reference (state_dict order).
        self.main_decoder_blocks = nn.ModuleList()
        n_struct = len(self.struct_indices)
        if n_struct:
            self.structural_path_projections = nn.ModuleList(
                nn.Conv2d(dim, c, 1) for c in channels[:n_struct]
            )
            self.structural_decoder_blocks = nn.ModuleList()
        for i, cout in enumerate(channels):
            cin = channels[i - 1] if i > 0 else channels[0]
            struct_ch = 0
            if i < n_struct:
                struct_in = channels[i - 1] if i > 0 else dim
                self.structural_decoder_blocks.append(StructuralPathwayBlock(struct_in, cout, cout))
                struct_ch = cout
            self.main_decoder_blocks.append(
                MainDecoderBlock(cin, cout, struct_ch, cout, cfg["decoder_dropout"])
            )
        last = channels[-1]
        self.depth_prediction_head = nn.Sequential(
            *_conv_bn_relu(last, last // 2), nn.Conv2d(last // 2, 1, 3, padding=1), nn.ReLU()
        )
        self.aux_depth_heads = nn.ModuleList()
        if cfg["aux_heads"]:
            for c in channels[:-1]:
                mid = max(c // 2, 16)
                self.aux_depth_heads.append(
                    nn.Sequential(*_conv_bn_relu(c, mid), nn.Conv2d(mid, 1, 1), nn.ReLU())
                )

    def _check_geometry(self, image_hw: tuple[int, int]) -> None:
        layers = len(self.tower.blocks)
        for key in ("main_path_indices", "structural_path_indices"):
            bad = [i for i in self.config[key] if i > layers]
            if bad:
                raise ValueError(
                    f"bad value for config key '{key}' of model type 'space_clip': layer {bad[0]} "
                    f"does not exist ({self.config['clip_model']} has {layers} blocks)"
                )
        ph, pw = self.tower.patch_size
        if image_hw[0] % ph or image_hw[1] % pw:
            raise ValueError(
                f"bad value for config key 'image_size' of model type 'space_clip': {image_hw} is "
                f"not a multiple of the patch size {ph}×{pw}"
            )

    def train(self, mode: bool = True) -> SpaceCLIP:
        super().train(mode)
        self.tower.eval()  # frozen: never in training mode
        return self

    @torch.no_grad()
    def backbone(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states 0..L (B×(1+N)×D, HF CLIPVisionModel numbering) and the pooler."""
        tokens = self.tower.embed(images)
        hidden = [tokens]
        for index in range(max(self.main_indices + self.struct_indices)):
            tokens = self.tower.run_block(index, tokens)
            hidden.append(tokens)
        if len(hidden) <= len(self.tower.blocks):  # the pooler needs the last block's CLS
            for index in range(len(hidden) - 1, len(self.tower.blocks)):
                tokens = self.tower.run_block(index, tokens)
        return hidden, self.tower.visual.ln_post(tokens[:, 0])

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:
        B, _, H, W = images.shape
        gh, gw = self.tower.grid_size((H, W))
        hidden, pooler = self.backbone(images)

        def grid(tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, 1:].transpose(1, 2).reshape(B, -1, gh, gw)

        main = []
        for i, index in enumerate(self.main_indices):
            tokens = hidden[index][:, 1:]
            if self.film_param_generators is not None:
                gamma, beta = self.film_param_generators[i](pooler).chunk(2, dim=-1)
                tokens = gamma.unsqueeze(1) * tokens + beta.unsqueeze(1)
            main.append(
                self.main_path_projections[i](tokens.transpose(1, 2).reshape(B, -1, gh, gw))
            )
        x = main[0]  # also stage 0's semantic skip
        struct_x = grid(hidden[self.struct_indices[0]]) if self.struct_indices else None
        stages = []
        for i, block in enumerate(self.main_decoder_blocks):
            struct = None
            if i < len(self.struct_indices):
                skip = self.structural_path_projections[i](grid(hidden[self.struct_indices[i]]))
                struct_x = struct = self.structural_decoder_blocks[i](struct_x, skip)
            x = block(x, main[i], struct)
            stages.append(x)
        depth = self.depth_prediction_head(x)
        aux = None
        if self.training and len(self.aux_depth_heads):
            aux = [head(f) for head, f in zip(self.aux_depth_heads, stages, strict=False)]
        return DepthOutput(depth=depth, aux_depths=aux)


# ------------------------------------------------------------------ reference checkpoints

#: HF CLIPVisionModel key (after ``vision_model.``) → open_clip VisionTransformer key.
_HF_TO_OPEN_CLIP = (
    (r"embeddings\.class_embedding", "class_embedding"),
    (r"embeddings\.patch_embedding\.weight", "conv1.weight"),
    (r"embeddings\.position_embedding\.weight", "positional_embedding"),
    (r"pre_layrnorm\.(weight|bias)", r"ln_pre.\1"),
    (r"post_layernorm\.(weight|bias)", r"ln_post.\1"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"transformer.resblocks.\1.ln_1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"transformer.resblocks.\1.ln_2.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
        r"transformer.resblocks.\1.attn.out_proj.\2",
    ),
)
_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
REFERENCE_BACKBONE_PREFIX = "clip_vision_model."
#: transformers 4.x nests the tower in ``vision_model.``; 5.x (the reference's 5.2) does not.
_HF_NESTED = "vision_model."


def hf_vision_to_open_clip(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF ``CLIPVisionModel`` weights (keys with or without the ``vision_model.`` of
    transformers 4.x) as open_clip ``VisionTransformer`` weights: q/k/v projections
    concatenated into ``in_proj``."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix(_HF_NESTED)
        if key == "embeddings.position_ids":
            continue  # a buffer of indices, not a weight
        match = _QKV.fullmatch(key)
        if match:
            layer, which, kind = match.groups()
            qkv.setdefault((layer, kind), {})[which] = tensor
            continue
        for pattern, target in _HF_TO_OPEN_CLIP:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = tensor
                break
        else:
            raise ValueError(f"unexpected HF CLIP vision key '{key}'")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer}: incomplete q/k/v {kind} projections")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]
        )
    return out


def from_reference_state_dict(
    model: SpaceCLIP, reference: dict[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Load a state dict saved by the reference ``SPACECLIP`` into ``model``.

    Decoder keys are the reference's own names; ``clip_vision_model.*`` backbone keys (present
    when the reference saved its whole model) are mapped from HF CLIP to open_clip, otherwise
    the model keeps the backbone it was built with. Returns {"backbone": [...], "decoder":
    [...]} of the keys loaded. Raises ValueError naming a missing or unexpected key.
    """
    backbone = {
        k[len(REFERENCE_BACKBONE_PREFIX) :]: v
        for k, v in reference.items()
        if k.startswith(REFERENCE_BACKBONE_PREFIX)
    }
    decoder = {k: v for k, v in reference.items() if not k.startswith(REFERENCE_BACKBONE_PREFIX)}
    expected = {k for k in model.state_dict() if not k.startswith("tower.")}
    missing, unexpected = sorted(expected - set(decoder)), sorted(set(decoder) - expected)
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise ValueError(
            f"not a SPACE-CLIP decoder of this config: {what} "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    state = dict(decoder)
    if backbone:
        state.update({f"tower.visual.{k}": v for k, v in hf_vision_to_open_clip(backbone).items()})
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"unexpected backbone key '{result.unexpected_keys[0]}'")
    if backbone and result.missing_keys:
        raise ValueError(f"backbone key '{result.missing_keys[0]}' missing from the reference")
    return {"backbone": sorted(backbone), "decoder": sorted(decoder)}
