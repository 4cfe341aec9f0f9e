"""The PyTorch backend: a ``DepthModel`` on a device, with autocast precision and the memory
layout the model prefers."""

from __future__ import annotations

import contextlib
import re

import torch

from moa_depth_ros.inference.estimator import Grid
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.models import DepthModel
from moa_depth_ros.models.checkpoint import load_or_zero_shot
from moa_depth_ros.options import PRECISIONS

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' → torch.device, with a clear error when CUDA is absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", device or ""):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device(device)


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("precision 'fp16' is not supported on CPU; use 'fp32' or 'bf16'")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}"
        )


class TorchBackend:
    """``model.forward_grid`` on ``device`` under autocast ``precision``.

    ``channels_last`` None: as the model prefers (convolution-heavy SPACE-CLIP runs 13 % faster
    NHWC on CPU). It converts the model's weights in place, so code that keeps training the
    model (validation) passes False. ``compile``: torch.compile (the input size is fixed, so
    it compiles once).
    """

    name = "torch"

    def __init__(
        self,
        model: DepthModel,
        device: str = "auto",
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,
    ):
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.precision = precision
        self.provider = f"torch {self.device}"
        self.model_type = model.model_type
        self.model_config = model.config
        self.preprocessing = model.preprocessing
        self.output_align_corners = model.output_align_corners
        self.output_kind = model.output_kind
        self.output_space = model.output_space
        self.output_resize_mode = model.output_resize_mode
        self.takes_depth_prompt = model.takes_depth_prompt
        self.fixed_input_size = False  # the weights run at any size the size rule gives
        if channels_last is None:
            channels_last = model.prefers_channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        grid = self.model.forward_grid
        self._forward = torch.compile(grid) if compile else grid

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def forward_grid(self, batch: torch.Tensor, prompt_depth: torch.Tensor | None = None) -> Grid:
        batch = batch.contiguous(memory_format=self.memory_format)
        with self._autocast():
            if prompt_depth is None:
                out = self._forward(batch)
            else:
                out = self._forward(batch, prompt_depth=prompt_depth)
        confidence = out.confidence.float() if out.confidence is not None else None
        return Grid(out.depth.float(), confidence)


def open_backend(options: InferenceOptions) -> TorchBackend:
    """The checkpoint (or zero-shot DepthCLIP) of ``options`` in torch."""
    model, _ = load_or_zero_shot(options.checkpoint, options.clip_pretrained, options.verify)
    return TorchBackend(model, options.device, options.precision, compile=options.compile)
