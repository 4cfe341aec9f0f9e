"""Depth models (pure PyTorch, no ROS): `build_model(config) -> DepthModel`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from moa_depth_ros.models import depthblip2, depthclip, hf_depth, moa_depthclip, space_clip
from moa_depth_ros.models.base import DepthModel
from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import Preprocessing, preprocess

# type → (config resolver, model class)
_REGISTRY: dict[str, tuple[Callable[[dict], dict], type[DepthModel]]] = {
    "moa_depthclip": (moa_depthclip.resolve, moa_depthclip.MoADepthCLIP),
    "depthclip": (depthclip.resolve, depthclip.DepthCLIP),
    "space_clip": (space_clip.resolve, space_clip.SpaceCLIP),
    "depthblip2": (depthblip2.resolve, depthblip2.DepthBLIP2),
    "hf_depth": (hf_depth.resolve, hf_depth.HFDepth),
}
MODEL_TYPES = tuple(_REGISTRY)
#: The model a node or CLI runs when no checkpoint is given: zero-shot DepthCLIP needs nothing
#: but CLIP weights.
ZERO_SHOT_MODEL_TYPE = "depthclip"


def resolve_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config (defaults filled in) for `config`; ValueError naming any bad key."""
    if not isinstance(config, Mapping):
        raise ValueError(f"model config must be a mapping, got {type(config).__name__}")
    model_type = config.get("type", "moa_depthclip")
    if model_type not in _REGISTRY:
        raise ValueError(
            f"bad value for config key 'type': {model_type!r} (known: {', '.join(MODEL_TYPES)})"
        )
    return _REGISTRY[model_type][0](dict(config))


def build_model(config: Mapping[str, Any], load_pretrained: bool = True) -> DepthModel:
    """Build a depth model. `load_pretrained=False` skips CLIP weights and text encoding
    (used when a checkpoint supplies every tensor)."""
    resolved = resolve_model_config(config)
    model_class = _REGISTRY[resolved["type"]][1]
    return model_class(resolved, load_pretrained=load_pretrained)


__all__ = [
    "MODEL_TYPES",
    "ZERO_SHOT_MODEL_TYPE",
    "DepthModel",
    "DepthOutput",
    "Preprocessing",
    "build_model",
    "preprocess",
    "resolve_model_config",
]
