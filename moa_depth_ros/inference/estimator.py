"""DepthEstimator: numpy RGB in, metric depth (and confidence) at the input resolution out.

It runs any :class:`Backend` — the network up to its output grid — and owns everything around
it, identical for every backend: the shared ``models.preprocess`` on the backend's device, flip
test-time augmentation, the one bilinear resize to each image's resolution, clamping and NaN
handling. Only uint8 pixels go in and float32 depth comes out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models import DepthModel, Preprocessing, preprocess


class Grid(NamedTuple):
    """Depth (B×1×h×w float32 metres) and confidence (or None) at the model's output grid."""

    depth: torch.Tensor
    confidence: torch.Tensor | None


class Backend(Protocol):
    """A depth network up to its output grid, on some runtime."""

    #: Runtime name as in options.BACKENDS ("torch", "onnxruntime", ...).
    name: str
    #: Where inputs are prepared for ``forward_grid`` (and its outputs come back).
    device: torch.device
    #: The precision that really runs ("fp32", "fp16", "bf16", "int8").
    precision: str
    #: What executes it, for logs and diagnostics ("torch cpu", "CPUExecutionProvider").
    provider: str
    model_type: str
    model_config: dict[str, Any]
    preprocessing: Preprocessing
    output_align_corners: bool

    def forward_grid(self, batch: torch.Tensor) -> Grid:
        """Normalized B×3×h×w float32 input on ``device`` → float32 grid outputs."""
        ...


@dataclass
class DepthResult:
    """depth: H×W float32 metres (NaN = invalid); confidence: H×W float32 in [0, 1] or None;
    timings: seconds per stage (preprocess, inference, postprocess, total)."""

    depth: np.ndarray
    confidence: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


def validate_rgb(rgb: object) -> np.ndarray:
    """An H×W×3 uint8 array, or ValueError saying what is wrong with it."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected an H×W×3 uint8 numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8 RGB, got dtype {rgb.dtype}")
    if rgb.ndim != 3:
        raise ValueError(f"expected an H×W×3 array, got {rgb.ndim}-D shape {rgb.shape}")
    if rgb.shape[2] != 3:
        raise ValueError(
            f"expected 3 channels (RGB), got {rgb.shape[2]} channels, shape {rgb.shape}"
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"empty image: shape {rgb.shape}")
    return rgb


class DepthEstimator:
    """Runs a :class:`Backend` on numpy images; thread-compatible (one predict at a time)."""

    def __init__(
        self,
        backend: Backend,
        min_depth: float | None = None,
        max_depth: float | None = None,
        flip_tta: bool = False,
        warmup: bool = True,
    ):
        self.backend = backend
        self.model_type = backend.model_type
        self.preprocessing = backend.preprocessing
        self.device = backend.device
        # Flip test-time augmentation: the mean of the prediction and the mirrored prediction of
        # the mirrored image, at the output size (SPACE-CLIP's final evaluation).
        self.flip_tta = flip_tta
        # The default output range; predict() takes another one per call (the node's
        # runtime min_depth / max_depth) without changing the estimator.
        config = backend.model_config
        self.depth_range = (
            float(min_depth if min_depth is not None else config.get("min_depth", 1e-3)),
            float(max_depth if max_depth is not None else config.get("max_depth", 10.0)),
        )
        check_depth_range(*self.depth_range, "DepthEstimator")
        if warmup:
            h, w = self.preprocessing.input_size
            self.predict(np.zeros((h, w, 3), np.uint8))

    @property
    def precision(self) -> str:
        return self.backend.precision

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _grid(self, inputs: torch.Tensor) -> Grid:
        grid = self.backend.forward_grid(inputs)
        if not self.flip_tta:
            return grid
        # Flipping commutes with the (symmetric) bilinear resize: averaged at the grid.
        mirrored = self.backend.forward_grid(inputs.flip(-1))
        depth = 0.5 * (grid.depth + mirrored.depth.flip(-1))
        confidence = grid.confidence
        if confidence is not None:
            confidence = 0.5 * (confidence + mirrored.confidence.flip(-1))
        return Grid(depth, confidence)

    def predict(
        self, rgb: np.ndarray, depth_range: tuple[float, float] | None = None
    ) -> DepthResult:
        """Depth for one H×W×3 uint8 RGB image, at its own resolution, clamped to
        ``depth_range`` (default: the estimator's)."""
        return self.predict_batch([rgb], depth_range)[0]

    @torch.inference_mode()
    def predict_batch(
        self, images: Sequence[np.ndarray], depth_range: tuple[float, float] | None = None
    ) -> list[DepthResult]:
        """Several images (cameras), of any sizes, in one forward at the model's input size;
        each result at its own image's resolution, the same as single calls."""
        depth_range = self.depth_range if depth_range is None else depth_range
        check_depth_range(*depth_range, "depth_range")
        images = [validate_rgb(rgb) for rgb in images]
        if not images:
            return []
        start = time.perf_counter()
        groups: dict[tuple[int, int], list[int]] = {}
        for index, rgb in enumerate(images):
            groups.setdefault(rgb.shape[:2], []).append(index)
        inputs = torch.cat([self._model_inputs([images[i] for i in g]) for g in groups.values()])
        self._sync()
        t_pre = time.perf_counter()
        depth, confidence = self._grid(inputs)
        self._sync()
        t_inf = time.perf_counter()
        depth_maps: list[np.ndarray] = [np.empty(0)] * len(images)
        confidence_maps: list[np.ndarray | None] = [None] * len(images)
        first = 0
        for size, indices in groups.items():
            rows = slice(first, first + len(indices))
            first += len(indices)
            group_depth, group_conf = DepthModel.resize_output(
                depth[rows],
                None if confidence is None else confidence[rows],
                size,
                align_corners=self.backend.output_align_corners,
            )
            group_depth = torch.where(
                torch.isfinite(group_depth), group_depth.clamp(*depth_range), torch.nan
            )
            group_depth = group_depth[:, 0].cpu().numpy()
            if group_conf is not None:
                group_conf = group_conf.clamp(0.0, 1.0)[:, 0].cpu().numpy()
            for row, index in enumerate(indices):
                depth_maps[index] = group_depth[row]
                confidence_maps[index] = None if group_conf is None else group_conf[row]
        end = time.perf_counter()
        timings = {
            "preprocess": t_pre - start,
            "inference": t_inf - t_pre,
            "postprocess": end - t_inf,
            "total": end - start,
        }
        return [
            DepthResult(d, c, dict(timings))
            for d, c in zip(depth_maps, confidence_maps, strict=True)
        ]

    def _model_inputs(self, same_size: list[np.ndarray]) -> torch.Tensor:
        """Normalized model inputs of images of one size."""
        # ascontiguousarray: views with negative or padded strides are valid input too.
        pixels = torch.from_numpy(np.stack([np.ascontiguousarray(rgb) for rgb in same_size]))
        pixels = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return preprocess(pixels, self.preprocessing)
