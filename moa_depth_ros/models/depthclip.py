"""DepthCLIP (Zhang et al., ACM MM 2022): zero-shot depth from CLIP by distance-word classification.

Faithful to the reference code (docs/methods.md): RN50 layer4 map without attention pooling,
L2-normalized, every second channel kept (2048 → 1024, as the reference's
`F.interpolate(scale_factor=0.5)` on the channel axis does), logits = 100·f·T / 0.1 against the
7 prompts "This object is <class>", depth = Σ softmax·bins. ImageNet mean/std.
The ViT variant uses the projected patch tokens (ln_post → proj) instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.clip_backbone import check_pretrained, create_clip, encode_prompts
from moa_depth_ros.models.config import image_size_hw, is_positive_number, resolve_config
from moa_depth_ros.models.heads import bin_confidence
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

DEPTH_CLASSES = [
    "giant",
    "extremely close",
    "close",
    "not in distance",
    "a little remote",
    "far",
    "unseen",
]
DEPTH_BINS = [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00]

DEFAULTS = {
    "clip_model": "RN50-quickgelu",
    "clip_pretrained": "openai",
    "image_size": [416, 544],
    "classes": DEPTH_CLASSES,
    "bins": DEPTH_BINS,
    "template": "This {object} is {cls}",
    "object": "object",
    "temperature": 0.1,
    "flip_tta": True,
}


def _same_length_lists(cfg: dict) -> bool:
    return len(cfg["classes"]) == len(cfg["bins"]) >= 2


CHECKS = {
    "clip_model": (lambda v: isinstance(v, str) and v, "an open_clip RN or ViT model name"),
    "clip_pretrained": (check_pretrained, "'openai', another open_clip tag, 'none', or a file"),
    "image_size": (image_size_hw, "a positive int or [height, width]"),
    "classes": (lambda v: all(isinstance(c, str) for c in v), "a list of class words"),
    "bins": (lambda v: all(is_positive_number(b) for b in v), "a list of depths in metres"),
    "template": (lambda v: "{cls}" in v, "a template containing '{cls}'"),
    "object": (lambda v: isinstance(v, str), "a string"),
    "temperature": (is_positive_number, "a positive number"),
    "flip_tta": (lambda v: isinstance(v, bool), "true or false"),
}


def resolve(config: dict) -> dict:
    cfg = resolve_config("depthclip", config, DEFAULTS, CHECKS)
    if not _same_length_lists(cfg):
        raise ValueError(
            "bad value for config key 'bins' of model type 'depthclip': needs one bin per class "
            f"and at least 2 ({len(cfg['bins'])} bins, {len(cfg['classes'])} classes)"
        )
    return cfg


class DepthCLIP(DepthModel):
    model_type = "depthclip"

    def __init__(self, cfg: dict, load_pretrained: bool = True):
        image_hw = image_size_hw(cfg["image_size"])
        super().__init__(cfg, Preprocessing(image_hw, IMAGENET_MEAN, IMAGENET_STD, "bilinear"))
        self.is_resnet = not cfg["clip_model"].startswith("ViT")
        # ResNets keep their native size (attnpool is unused); ViTs get positional embeddings
        # resized to the input grid by open_clip.
        clip = create_clip(
            cfg["clip_model"],
            cfg["clip_pretrained"] if load_pretrained else "none",
            None if self.is_resnet else image_hw,
            weights_follow=not load_pretrained,
        )
        self.visual = clip.visual
        if self.is_resnet:
            self.visual.attnpool = None  # DepthCLIP skips attention pooling
        prompts = [
            cfg["template"].format(object=cfg["object"], cls=name) for name in cfg["classes"]
        ]
        text_dim = clip.text_projection.shape[-1]
        bank = torch.zeros(text_dim, len(prompts))
        if load_pretrained:
            bank = (
                encode_prompts(clip, cfg["clip_model"], prompts).t().contiguous()
            )  # D×K unit cols
        self.register_buffer("text_bank", bank, persistent=True)
        self.register_buffer(
            "bins", torch.tensor(cfg["bins"], dtype=torch.float32), persistent=True
        )
        del clip
        self.requires_grad_(False)

    @property
    def bin_centers(self) -> torch.Tensor:
        return self.bins

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """B×D×h×w features in the text embedding's dimension, as DepthCLIP compares them."""
        if self.is_resnet:
            v = self.visual
            x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))  # B×2048×h×w
            x = F.normalize(x, dim=1)
            # RN50: 2048 → 1024 by keeping every second channel after normalizing, exactly as
            # the reference's channel-axis interpolate does; other widths use the same stride rule.
            return x[:, :: x.shape[1] // self.text_bank.shape[0]]
        v = self.visual
        tokens = v.transformer(v._embeds(images))
        tokens = v.ln_post(tokens[:, 1:]) @ v.proj  # B×N×512
        gh, gw = images.shape[-2] // v.patch_size[0], images.shape[-1] // v.patch_size[1]
        tokens = F.normalize(tokens, dim=-1)
        return tokens.transpose(1, 2).reshape(images.shape[0], -1, gh, gw)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.image_features(images)
        logits = 100.0 * torch.einsum("bdhw,dk->bkhw", feats, self.text_bank.to(feats.dtype))
        return logits / self.config["temperature"]

    #: The reference upsamples with align_corners=True.
    output_align_corners = True

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:
        logits = self._logits(images)
        probs = logits.float().softmax(dim=1)
        if self.config["flip_tta"]:
            flipped = self._logits(images.flip(-1)).float().softmax(dim=1).flip(-1)
            probs = 0.5 * (probs + flipped)
        depth = (probs * self.bins.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        confidence = bin_confidence(probs)
        return DepthOutput(depth=depth, confidence=confidence, bin_logits=logits)
