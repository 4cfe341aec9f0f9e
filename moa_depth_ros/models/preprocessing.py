"""The one preprocessing function shared by the estimator and the training package.

``resize: torch`` (the default) runs on whatever device the input tensor is on, so the estimator
can do it on the GPU. ``resize: pil`` resizes each uint8 image with Pillow on the CPU, exactly
as the SPACE-CLIP and DepthBLIP-2 reference processors do: torch's antialiased kernels differ
from Pillow's by a few grey levels, which moved their depth by 0.6–1 %. ``resize: torchvision``
resizes the uint8 image with torchvision and rounds back to uint8, exactly as the transformers
image processors of the torchvision backend (the default one) do.

The model input size is ``input_size`` unless a ``size_rule`` derives it from each image's size
(``Preprocessing.input_size_for``): ``keep_aspect`` (the transformers DPT / Depth Anything /
ZoeDepth rule: scale as little as possible to fit ``size_target``, keep the aspect ratio, round
each side to a multiple of ``size_multiple``) or ``floor_multiple`` (GLPN: each side rounded down
to a multiple). ``pad: zoedepth_reflect`` reflect-pads each side by ``int(sqrt(side / 2) * 3)``
before the resize, as ZoeDepth's processor does; the model's output then covers the padded
image (``padding_for``). New fields keep their defaults out of ``to_dict``, so the
preprocessing that older files store still reads back equal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Which library resizes: torch (on the tensor's device), Pillow (as the reference code), or
#: torchvision on uint8 (as the transformers image processors).
RESIZE_LIBRARIES = ("torch", "pil", "torchvision")
#: How the model input size follows from the image size.
SIZE_RULES = ("fixed", "keep_aspect", "floor_multiple")
#: Padding added to the image before the resize (the model's output covers it).
PADDINGS = ("none", "zoedepth_reflect")
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: the whole image resized (no crop) to input_size, normalized."""

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "bilinear"  # the interpolation: bilinear or bicubic
    resize: str = "torch"  # the library: RESIZE_LIBRARIES
    # Added for the transformers processors; left out of to_dict() at these defaults.
    size_rule: str = "fixed"  # SIZE_RULES; "fixed": every image becomes input_size
    size_target: tuple[int, int] | None = None  # keep_aspect: the (height, width) to fit
    size_multiple: int = 1  # keep_aspect / floor_multiple: each side a multiple of this
    pad: str = "none"  # PADDINGS
    antialias: bool = True  # resize torch / torchvision: antialiased when shrinking
    align_corners: bool = False  # resize torch only

    def __post_init__(self) -> None:
        if self.resize_mode not in _PIL_FILTERS:
            raise ValueError(f"resize_mode must be bilinear or bicubic, got {self.resize_mode!r}")
        if self.resize not in RESIZE_LIBRARIES:
            raise ValueError(f"resize must be one of {RESIZE_LIBRARIES}, got {self.resize!r}")
        if self.size_rule not in SIZE_RULES:
            raise ValueError(f"size_rule must be one of {SIZE_RULES}, got {self.size_rule!r}")
        if self.pad not in PADDINGS:
            raise ValueError(f"pad must be one of {PADDINGS}, got {self.pad!r}")
        multiple = self.size_multiple
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            raise ValueError(f"size_multiple must be a positive int, got {multiple!r}")
        if self.size_rule == "keep_aspect" and self.size_target is None:
            raise ValueError("size_rule keep_aspect needs size_target (height, width)")

    def to_dict(self) -> dict:
        data = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in _NEW_FIELDS and value == spec.default:
                continue  # what files written before the field hold
            data[spec.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        target = data.get("size_target")
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resize_mode=data.get("resize_mode", "bilinear"),
            resize=data.get("resize", "torch"),  # files written before the key: torch
            size_rule=data.get("size_rule", "fixed"),
            size_target=None if target is None else (int(target[0]), int(target[1])),
            size_multiple=data.get("size_multiple", 1),
            pad=data.get("pad", "none"),
            antialias=bool(data.get("antialias", True)),
            align_corners=bool(data.get("align_corners", False)),
        )

    def padding_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) added on each side of an image of ``image_hw`` before the resize."""
        if self.pad == "none":
            return (0, 0)
        # ZoeDepth: int(sqrt(side / 2) * 3), as its processor and post-processing compute it.
        return tuple(int(np.sqrt(side / 2) * 3) for side in image_hw)  # type: ignore[return-value]

    def input_size_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The model input (height, width) of an image of ``image_hw`` (padding included)."""
        if self.size_rule == "fixed":
            return tuple(self.input_size)  # type: ignore[return-value]
        pad_h, pad_w = self.padding_for(image_hw)
        height, width = image_hw[0] + 2 * pad_h, image_hw[1] + 2 * pad_w
        multiple = self.size_multiple
        if self.size_rule == "floor_multiple":
            return (max(multiple, height // multiple * multiple),
                    max(multiple, width // multiple * multiple))  # fmt: skip
        # transformers' DPT get_resize_output_image_size, same float operations.
        scale_h = self.size_target[0] / height
        scale_w = self.size_target[1] / width
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
        # A side that would round to 0 (an extreme aspect ratio) gets one multiple; the
        # processor would give the model an empty image.
        return (max(multiple, round(scale_h * height / multiple) * multiple),
                max(multiple, round(scale_w * width / multiple) * multiple))  # fmt: skip


_NEW_FIELDS = ("size_rule", "size_target", "size_multiple", "pad", "antialias", "align_corners")


def preprocess(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 (or float in [0, 255]) B×3×H×W RGB → float32 B×3×h×w normalized model input
    (h×w: ``spec.input_size_for`` the images' size)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"preprocess expects B×3×H×W RGB, got shape {tuple(images.shape)}")
    size = spec.input_size_for(tuple(images.shape[-2:]))
    pad_h, pad_w = spec.padding_for(tuple(images.shape[-2:]))
    if pad_h >= images.shape[-2] or pad_w >= images.shape[-1]:
        raise ValueError(
            f"a {images.shape[-2]}x{images.shape[-1]} image is too small for its reflect padding "
            f"({pad_h} rows, {pad_w} columns)"
        )
    if spec.resize == "pil" and tuple(images.shape[-2:]) != size:
        images = _pil_resize(images, size, spec.resize_mode)
    elif spec.resize == "torchvision" and tuple(images.shape[-2:]) != size:
        images = _torchvision_resize(images, size, spec)
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float() / 255.0
    if pad_h or pad_w:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    if tuple(x.shape[-2:]) != size:
        # antialias only matters (and is only supported) when shrinking with these modes.
        x = F.interpolate(
            x,
            size=size,
            mode=spec.resize_mode,
            align_corners=spec.align_corners,
            antialias=spec.antialias,
        )
        if spec.resize_mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float input rounded to uint8 (the libraries below resize 8-bit images)."""
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().round().clamp(0, 255).to(torch.uint8)


def _pil_resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """B×3×H×W → B×3×h×w uint8 resized by Pillow, on the input's device."""
    height, width = size
    batch = _as_uint8(images).to("cpu")
    resized = [
        np.asarray(
            Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
                (width, height), _PIL_FILTERS[mode]
            )
        )
        for image in batch
    ]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(images.device)


def _torchvision_resize(
    images: torch.Tensor, size: tuple[int, int], spec: Preprocessing
) -> torch.Tensor:
    """B×3×H×W → B×3×h×w uint8 resized by torchvision as the transformers processors call it
    (on a uint8 tensor: rounded and clamped back to uint8)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvF

    modes = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
    return tvF.resize(
        _as_uint8(images), list(size), interpolation=modes[spec.resize_mode],
        antialias=spec.antialias,
    )  # fmt: skip
