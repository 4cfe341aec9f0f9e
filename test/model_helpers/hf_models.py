"""Tiny random transformers depth models (``type: hf_depth``): the one builder of every test
that needs a foundation model (tests of the family code, bag evaluation, comparisons, the
node). Each family is built at tiny size with transformers' own config classes and its image
processor; :func:`save_family` writes it as a user's local model directory
(``save_pretrained``), :func:`hf_checkpoint` makes a checkpoint from that directory the way a
user does (``moa-depth-checkpoint --type hf_depth --set pretrained=DIR``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import transformers as hf

from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint

_DA_NECK = {
    "reassemble_hidden_size": 16, "neck_hidden_sizes": [8, 16], "reassemble_factors": [2, 1],
    "fusion_hidden_size": 8, "head_hidden_size": 8,
}  # fmt: skip
_DINOV2_SUB = {
    "model_type": "dinov2", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 32, "patch_size": 14, "image_size": 28,
}  # fmt: skip


def _dinov2() -> hf.Dinov2Config:
    return hf.Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        image_size=28, patch_size=14, out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )  # fmt: skip


def _aspect_kept_56(cls: type) -> object:
    # 56 px, aspect kept, multiples of 14: a 48x64 image becomes a 42x56 model input.
    return cls(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
               resample=3)  # fmt: skip


def _depth_anything(kind: str) -> tuple[torch.nn.Module, object]:
    config = hf.DepthAnythingConfig(
        backbone_config=_dinov2(), depth_estimation_type=kind,
        max_depth=20 if kind == "metric" else 1, **_DA_NECK,
    )  # fmt: skip
    return hf.DepthAnythingForDepthEstimation(config), _aspect_kept_56(hf.DPTImageProcessor)


def _prompt_depth_anything() -> tuple[torch.nn.Module, object]:
    config = hf.PromptDepthAnythingConfig(backbone_config=_dinov2(), **_DA_NECK)
    processor = _aspect_kept_56(hf.PromptDepthAnythingImageProcessor)
    return hf.PromptDepthAnythingForDepthEstimation(config), processor


def _depth_pro() -> tuple[torch.nn.Module, object]:
    config = hf.DepthProConfig(
        patch_size=28, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[8, 8], scaled_images_ratios=[0.25, 0.5, 1],
        scaled_images_overlap_ratios=[0.0, 0.5, 0.25], scaled_images_feature_dims=[8, 8, 8],
        use_fov_model=True, num_fov_head_layers=1, image_model_config=dict(_DINOV2_SUB),
        patch_model_config=dict(_DINOV2_SUB), fov_model_config=dict(_DINOV2_SUB),
    )  # fmt: skip
    processor = hf.DepthProImageProcessor(size={"height": 112, "width": 112})
    return hf.DepthProForDepthEstimation(config), processor


def _dpt() -> tuple[torch.nn.Module, object]:
    config = hf.DPTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8, use_auxiliary_head=False,
    )  # fmt: skip
    processor = hf.DPTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return hf.DPTForDepthEstimation(config), processor


def _glpn() -> tuple[torch.nn.Module, object]:
    config = hf.GLPNConfig(
        hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
        decoder_hidden_size=8, max_depth=10,
    )  # fmt: skip
    return hf.GLPNForDepthEstimation(config), hf.GLPNImageProcessor(size_divisor=32)


def _zoedepth() -> tuple[torch.nn.Module, object]:
    beit = hf.BeitConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        image_size=32, patch_size=8, out_indices=[0, 1, 2, 3], use_relative_position_bias=True,
        reshape_hidden_states=False,
    )  # fmt: skip
    config = hf.ZoeDepthConfig(
        backbone_config=beit, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8,
        num_relative_features=8, bottleneck_features=8, bin_embedding_dim=8,
        num_attractors=[4, 4, 2, 1], patch_transformer_hidden_size=8,
        patch_transformer_intermediate_size=16, patch_transformer_num_attention_heads=2,
        num_patch_transformer_layers=1,
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}],
    )  # fmt: skip
    processor = hf.ZoeDepthImageProcessor(
        size={"height": 32, "width": 48}, keep_aspect_ratio=True, ensure_multiple_of=8
    )
    return hf.ZoeDepthForDepthEstimation(config), processor


#: name → (builder, weight noise): random init leaves the heads near constant; noise (and a
#: positive last bias where a ReLU would zero everything, :func:`_randomized`) gives depth with
#: structure.
FAMILIES: dict[str, tuple[Callable[[], tuple[torch.nn.Module, object]], float]] = {
    "depth_anything_metric": (lambda: _depth_anything("metric"), 0.3),
    "depth_anything_relative": (lambda: _depth_anything("relative"), 0.3),
    "prompt_depth_anything": (_prompt_depth_anything, 0.3),
    "depth_pro": (_depth_pro, 0.02),
    "dpt": (_dpt, 0.1),
    "glpn": (_glpn, 0.3),
    "zoedepth": (_zoedepth, 0.3),
}


def _randomized(model: torch.nn.Module, noise: float) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * noise)
        family = model.config.model_type
        if family == "depth_pro":
            model.head.layers[4].bias.fill_(1.0)  # inverse depth ~1 (ReLU output)
            model.fov_model.head.layers[2].bias.fill_(60.0)  # a 60° field of view
        elif family == "prompt_depth_anything":
            model.head.conv3.bias.fill_(1.0)
        elif family == "dpt":
            model.head.head[4].bias.fill_(1.0)
    return model.eval()


def build_family(name: str) -> tuple[torch.nn.Module, object]:
    """(transformers model with noisy random weights, its image processor) for ``name``, a key
    of :data:`FAMILIES`; the same weights on every call."""
    build, noise = FAMILIES[name]
    torch.manual_seed(0)
    model, processor = build()
    return _randomized(model, noise), processor


def save_family(name: str, directory: Path) -> Path:
    """``name`` saved into ``directory`` (model + processor), as a user's local directory."""
    model, processor = build_family(name)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def hf_checkpoint(name: str, directory: Path) -> Path:
    """``directory/<name>.safetensors``: the family saved as a local model directory
    (``directory/<name>``) and made into a self-contained checkpoint from it."""
    source = save_family(name, directory / name)
    built = build_model({"type": "hf_depth", "pretrained": str(source)}).eval()
    return save_checkpoint(built, directory / f"{name}.safetensors")
