"""The one preprocessing function shared by the estimator and the training package.

It runs on whatever device the input tensor is on, so the estimator can do it on the GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: the whole image resized (no crop) to input_size, normalized."""

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resize_mode=data.get("resize_mode", "bilinear"),
        )


def preprocess(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 (or float in [0, 255]) B×3×H×W RGB → float32 B×3×h×w normalized model input."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"preprocess expects B×3×H×W RGB, got shape {tuple(images.shape)}")
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float() / 255.0
    if tuple(x.shape[-2:]) != tuple(spec.input_size):
        # antialias only matters (and is only supported) when shrinking with these modes.
        x = F.interpolate(
            x, size=spec.input_size, mode=spec.resize_mode, align_corners=False, antialias=True
        )
        if spec.resize_mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
