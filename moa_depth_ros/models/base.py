"""What every depth model shares: its resolved config, its preprocessing, output resizing.

What a model's output grid is, and so how every runtime turns it into the result, is told by
class attributes the backends copy (and exported graphs store): ``output_kind`` (``metric``:
metres; ``relative``: affine-invariant inverse depth, unknown scale and shift, which is never
published as metres without anchoring), ``output_space`` (the grid holds depth or inverse depth;
it is resized in that space, and a metric inverse-depth grid becomes metres after the resize),
``output_resize_mode`` (bilinear or bicubic) and ``output_align_corners``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moa_depth_ros.models.output import DepthOutput
from moa_depth_ros.models.preprocessing import Preprocessing

OUTPUT_KINDS = ("metric", "relative")
OUTPUT_SPACES = ("depth", "inverse_depth")
OUTPUT_RESIZE_MODES = ("bilinear", "bicubic")
#: A metric inverse-depth grid is clamped to this before 1/x (as transformers' Depth Pro).
INVERSE_DEPTH_CLAMP = (1e-4, 1e4)


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
    #: OUTPUT_KINDS: metres, or relative inverse depth (module docstring).
    output_kind: str = "metric"
    #: OUTPUT_SPACES: what the grid holds, and so the space it is resized in.
    output_space: str = "depth"
    #: OUTPUT_RESIZE_MODES: the interpolation of the grid to the image.
    output_resize_mode: str = "bilinear"
    #: The model takes a metric depth prompt per image (``forward_grid(images, prompt_depth)``).
    takes_depth_prompt: bool = False
    #: Why the model cannot be exported to ONNX (it stays on torch), or None.
    onnx_unsupported: str | None = None

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
        mode: str = "bilinear",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Resize of depth (and confidence) maps to `size` (bilinear or bicubic)."""
        if tuple(depth.shape[-2:]) != tuple(size):
            depth = F.interpolate(depth, size=size, mode=mode, align_corners=align_corners)
            if confidence is not None:
                confidence = F.interpolate(
                    confidence, size=size, mode=mode, align_corners=align_corners
                )
        return depth, confidence

    def forward_grid(self, images: torch.Tensor) -> DepthOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, images: torch.Tensor, output_size: tuple[int, int] | None = None
    ) -> DepthOutput:
        out = self.forward_grid(images)
        size = tuple(output_size or images.shape[-2:])
        corners, mode = self.output_align_corners, self.output_resize_mode
        out.depth, out.confidence = self.resize_output(
            out.depth, out.confidence, size, corners, mode
        )
        out.depth = grid_values_to_output(out.depth, self.output_kind, self.output_space)
        if out.aux_depths is not None:
            out.aux_depths = [
                self.resize_output(aux, None, size, corners, mode)[0] for aux in out.aux_depths
            ]
        return out


def grid_values_to_output(depth: torch.Tensor, kind: str, space: str) -> torch.Tensor:
    """A resized grid as the result holds it: metres for metric models (1/x of a clamped
    inverse-depth grid), the values themselves for relative ones."""
    if kind == "metric" and space == "inverse_depth":
        return 1.0 / depth.clamp(*INVERSE_DEPTH_CLAMP)
    return depth


def grid_to_image(
    depth: torch.Tensor,
    confidence: torch.Tensor | None,
    image_hw: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    align_corners: bool = False,
    mode: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Grids that cover an image of ``image_hw`` padded by ``padding`` (rows, columns on each
    side) resized to the padded size and cropped to the image."""
    pad_h, pad_w = padding
    size = (image_hw[0] + 2 * pad_h, image_hw[1] + 2 * pad_w)
    depth, confidence = DepthModel.resize_output(depth, confidence, size, align_corners, mode)
    if pad_h or pad_w:
        rows, columns = slice(pad_h, pad_h + image_hw[0]), slice(pad_w, pad_w + image_hw[1])
        depth = depth[..., rows, columns]
        if confidence is not None:
            confidence = confidence[..., rows, columns]
    return depth, confidence
