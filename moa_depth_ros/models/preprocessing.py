"""The one preprocessing function shared by the estimator and the training package.

``resize: torch`` (the default) runs on whatever device the input tensor is on, so the estimator
can do it on the GPU. ``resize: pil`` resizes each uint8 image with Pillow on the CPU, exactly
as the SPACE-CLIP and DepthBLIP-2 reference processors do: torch's antialiased kernels differ
from Pillow's by a few grey levels, which moved their depth by 0.6–1 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Which library resizes: torch (on the tensor's device) or Pillow (as the reference code).
RESIZE_LIBRARIES = ("torch", "pil")
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: the whole image resized (no crop) to input_size, normalized."""

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "bilinear"  # the interpolation: bilinear or bicubic
    resize: str = "torch"  # the library: RESIZE_LIBRARIES

    def __post_init__(self) -> None:
        if self.resize_mode not in _PIL_FILTERS:
            raise ValueError(f"resize_mode must be bilinear or bicubic, got {self.resize_mode!r}")
        if self.resize not in RESIZE_LIBRARIES:
            raise ValueError(f"resize must be one of {RESIZE_LIBRARIES}, got {self.resize!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resize_mode=data.get("resize_mode", "bilinear"),
            resize=data.get("resize", "torch"),  # files written before the key: torch
        )


def preprocess(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 (or float in [0, 255]) B×3×H×W RGB → float32 B×3×h×w normalized model input."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"preprocess expects B×3×H×W RGB, got shape {tuple(images.shape)}")
    if spec.resize == "pil" and tuple(images.shape[-2:]) != tuple(spec.input_size):
        images = _pil_resize(images, spec)
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


def _pil_resize(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """B×3×H×W → B×3×h×w uint8 resized by Pillow, on the input's device (float input is
    rounded to uint8 first: Pillow resizes 8-bit images)."""
    height, width = spec.input_size
    batch = images.detach().float().round().clamp(0, 255).to("cpu", torch.uint8)
    resized = [
        np.asarray(
            Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
                (width, height), _PIL_FILTERS[spec.resize_mode]
            )
        )
        for image in batch
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(images.device)
