"""Tiny random transformers depth models (``type: hf_depth``) written as checkpoints, the way a
user makes one (``save_pretrained`` directory → ``moa-depth-checkpoint``): Depth Anything
relative and metric, and Prompt Depth Anything. For tests that need a foundation model of each
kind end to end (bag evaluation, comparisons); the same tiny configurations as
test/models/test_hf_depth.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as hf

from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint

#: Noise added to the random weights: random init leaves the heads near constant.
NOISE = 0.3
_DA_NECK = {
    "reassemble_hidden_size": 16, "neck_hidden_sizes": [8, 16], "reassemble_factors": [2, 1],
    "fusion_hidden_size": 8, "head_hidden_size": 8,
}  # fmt: skip


def _dinov2() -> hf.Dinov2Config:
    return hf.Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        image_size=28, patch_size=14, out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )  # fmt: skip


def _processor(cls: type) -> object:
    # 56 px, aspect kept, multiples of 14: a 48x64 image becomes a 42x56 model input.
    return cls(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
               resample=3)  # fmt: skip


def build_family(name: str) -> tuple[torch.nn.Module, object]:
    """(transformers model with noisy random weights, its image processor) for ``name``:
    depth_anything_relative, depth_anything_metric or prompt_depth_anything."""
    torch.manual_seed(0)
    if name == "prompt_depth_anything":
        config = hf.PromptDepthAnythingConfig(backbone_config=_dinov2(), **_DA_NECK)
        model = hf.PromptDepthAnythingForDepthEstimation(config)
        processor = _processor(hf.PromptDepthAnythingImageProcessor)
    else:
        kind = name.removeprefix("depth_anything_")
        config = hf.DepthAnythingConfig(
            backbone_config=_dinov2(), depth_estimation_type=kind,
            max_depth=20 if kind == "metric" else 1, **_DA_NECK,
        )  # fmt: skip
        model = hf.DepthAnythingForDepthEstimation(config)
        processor = _processor(hf.DPTImageProcessor)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * NOISE)
        if name == "prompt_depth_anything":
            model.head.conv3.bias.fill_(1.0)  # depth > 0 (a ReLU output)
    return model.eval(), processor


def hf_checkpoint(name: str, directory: Path) -> Path:
    """``directory/<name>.safetensors``: the family saved as a local model directory and made
    into a self-contained checkpoint from it (``pretrained=DIR``)."""
    model, processor = build_family(name)
    source = directory / name
    model.save_pretrained(source)
    processor.save_pretrained(source)
    built = build_model({"type": "hf_depth", "pretrained": str(source)}).eval()
    return save_checkpoint(built, directory / f"{name}.safetensors")
