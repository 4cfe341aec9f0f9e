"""What every depth model shares: its resolved config, its preprocessing, output resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import Preprocessing


class DepthModel(nn.Module):
    """Base class: `forward(images, output_size=None) -> DepthOutput`.

    `images` are B×3×H×W normalized with `self.preprocessing`; depth comes back at
    `output_size` (default: the input size), so callers never resize twice.

    Subclasses implement `forward_grid` (depth and confidence at the model's own output grid);
    `forward` adds the one bilinear resize with `output_align_corners`. Exported graphs
    (ONNX) stop at the grid, and the runtime does the same resize at the camera resolution.
    """

    model_type: str = ""
    #: How the grid is resized to the output (the references differ: DepthCLIP-style heads use
    #: align_corners=True).
    output_align_corners: bool = False
    #: Convolution-heavy models run faster with NHWC tensors (measured: SPACE-CLIP 13% on CPU).
    prefers_channels_last: bool = False

    def __init__(self, config: dict, preprocessing: Preprocessing):
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing

    @property
    def bin_centers(self) -> torch.Tensor | None:
        """Bin centres in metres for methods with bins (used by the CE loss), else None."""
        return None

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of trainable parameters (the optimizer gives each its own lr)."""
        return {"new_modules": [p for p in self.parameters() if p.requires_grad]}

    @staticmethod
    def resize_output(
        depth: torch.Tensor,
        confidence: torch.Tensor | None,
        size: tuple[int, int],
        align_corners: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bilinear resize of depth (and confidence) maps to `size`."""
        if tuple(depth.shape[-2:]) != tuple(size):
            depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=align_corners)
            if confidence is not None:
                confidence = F.interpolate(
                    confidence, size=size, mode="bilinear", align_corners=align_corners
                )
        return depth, confidence

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, images: torch.Tensor, output_size: tuple[int, int] | None = None
    ) -> DepthOutput:
        out = self.forward_grid(images)
        size = tuple(output_size or images.shape[-2:])
        out.depth, out.confidence = self.resize_output(
            out.depth, out.confidence, size, self.output_align_corners
        )
        if out.aux_depths is not None:
            out.aux_depths = [
                self.resize_output(aux, None, size, self.output_align_corners)[0]
                for aux in out.aux_depths
            ]
        return out
