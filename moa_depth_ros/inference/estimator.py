"""DepthEstimator: numpy RGB in, metric depth (and confidence) at the input resolution out.

It runs any :class:`Backend` — the network up to its output grid — and owns everything around
it, identical for every backend: the shared ``models.preprocess`` on the backend's device, flip
test-time augmentation, the one resize to each image's resolution (the model's
``output_resize_mode``, in its ``output_space``), clamping and NaN handling. Only uint8 pixels
go in and float32 depth comes out.

What ``DepthResult.depth`` holds follows ``estimator.output_kind``:

- ``metric``: metres, clamped to the depth range, NaN where the network gave a non-finite value.
- ``relative`` (e.g. Depth Anything relative, DPT/MiDaS): the model's affine-invariant
  **inverse** depth (disparity up to an unknown scale and shift), resized to the image and NaN
  where non-finite, but never clamped to the depth range and never inverted: it is not in
  metres. Publishing it as depth needs anchoring (a fit of scale and shift in inverse depth
  against metric points), which the node and bag evaluation add on top.

Models whose input size follows the image (``Preprocessing.size_rule``, e.g. Depth Anything's
aspect-kept multiples of 14) get one forward per input size; images whose sizes give the same
input size share one forward, as before. Models that take a depth prompt (Prompt Depth
Anything) get it per image through ``predict(rgb, prompt_depth=...)``; they refuse images
without one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models import Preprocessing, preprocess
from moa_depth_ros.models.base import grid_to_image, grid_values_to_output


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
    # models.base.DepthModel's output attributes; a backend without them gets the defaults
    # (metric, depth, bilinear, no prompt).
    output_kind: str
    output_space: str
    output_resize_mode: str
    takes_depth_prompt: bool
    #: An exported graph runs ``preprocessing.input_size`` only; torch runs any size.
    fixed_input_size: bool

    def forward_grid(self, batch: torch.Tensor, prompt_depth: torch.Tensor | None = None) -> Grid:
        """Normalized B×3×h×w float32 input on ``device`` (and, for models that take one, the
        B×1×h'×w' metric depth prompt) → float32 grid outputs. Called without ``prompt_depth``
        for models that take none."""
        ...


@dataclass
class DepthResult:
    """depth: H×W float32, metres for metric models and relative inverse depth for relative
    ones (module docstring; ``DepthEstimator.output_kind``), NaN = invalid; confidence: H×W
    float32 in [0, 1] or None; timings: seconds per stage (preprocess, inference, postprocess,
    total)."""

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


def validate_prompt_depth(prompt: object) -> np.ndarray:
    """A depth prompt as the model takes it: H×W float32 metres, holes (NaN, inf, ≤ 0) as 0
    (what a 16UC1 depth image holds where it has no return); ValueError saying what is wrong."""
    if not isinstance(prompt, np.ndarray):
        raise ValueError(f"depth prompt: expected an H×W float numpy array of metres, "
                         f"got {type(prompt).__name__}")  # fmt: skip
    if prompt.ndim == 3 and prompt.shape[2] == 1:
        prompt = prompt[..., 0]
    if prompt.ndim != 2 or prompt.size == 0:
        raise ValueError(f"depth prompt: expected a non-empty H×W array, got shape {prompt.shape}")
    if not np.issubdtype(prompt.dtype, np.floating):
        raise ValueError(
            f"depth prompt: expected float metres, got dtype {prompt.dtype} (convert 16UC1 "
            "millimetres to metres first)"
        )
    prompt = prompt.astype(np.float32)
    return np.where(np.isfinite(prompt) & (prompt > 0), prompt, np.float32(0.0))


#: The largest model input (in pixels) a size rule may ask for, as a multiple of the model's
#: nominal input: a 518×518 Depth Anything takes up to 16 times that area.
MAX_INPUT_AREA_FACTOR = 16


def model_output_range(model_config: dict[str, Any]) -> tuple[float, float]:
    """The depth range a model's config gives its output (its ``min_depth`` / ``max_depth``
    keys: the bins' range, a sigmoid's scale), the estimator's default clamp."""
    return (
        float(model_config.get("min_depth", 1e-3)),
        float(model_config.get("max_depth", 10.0)),
    )


class DepthEstimator:
    """Runs a :class:`Backend` on numpy images; thread-compatible (one predict at a time)."""

    def __init__(
        self,
        backend: Backend,
        output_range: tuple[float, float] | None = None,
        flip_tta: bool = False,
        warmup: bool = True,
    ):
        self.backend = backend
        self.model_type = backend.model_type
        self.preprocessing = backend.preprocessing
        self.device = backend.device
        # What the output is and how it is resized: output_kind says what DepthResult.depth
        # holds, "metric" metres or "relative" inverse depth (module docstring).
        self.output_kind: str = backend.output_kind
        self.output_space: str = backend.output_space
        self.output_resize_mode: str = backend.output_resize_mode
        self.takes_depth_prompt: bool = backend.takes_depth_prompt
        self.fixed_input_size: bool = backend.fixed_input_size
        # Flip test-time augmentation: the mean of the prediction and the mirrored prediction of
        # the mirrored image, at the output size (SPACE-CLIP's final evaluation).
        self.flip_tta = flip_tta
        # The output range metric depth is clamped to: ``output_range``, else the range the
        # model's config gives its output (bins, a sigmoid's scale). predict() takes another
        # per call (the node's runtime min_depth / max_depth) without changing the estimator.
        self.output_range = output_range or model_output_range(backend.model_config)
        check_depth_range(*self.output_range, "DepthEstimator output range")
        if warmup:
            self._warm_up()

    def _warm_up(self) -> None:
        """One prediction at the model's input size (an image of that size keeps it; for padded
        inputs, ZoeDepth's, no image size does: the network alone runs once)."""
        h, w = self.preprocessing.input_size
        prompt = np.ones((h, w), np.float32) if self.takes_depth_prompt else None
        if self.preprocessing.input_size_for((h, w)) == (h, w):
            self.predict(np.zeros((h, w, 3), np.uint8), prompt_depth=prompt)
            return
        with torch.inference_mode():
            inputs = torch.zeros(1, 3, h, w, device=self.device)
            if prompt is None:
                self._grid(inputs)
            else:
                self._grid(inputs, torch.from_numpy(prompt[None, None]).to(self.device))

    @property
    def precision(self) -> str:
        return self.backend.precision

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _forward(self, inputs: torch.Tensor, prompt: torch.Tensor | None) -> Grid:
        if prompt is None:
            return self.backend.forward_grid(inputs)
        return self.backend.forward_grid(inputs, prompt)

    def _grid(self, inputs: torch.Tensor, prompt: torch.Tensor | None = None) -> Grid:
        grid = self._forward(inputs, prompt)
        if not self.flip_tta:
            return grid
        # Flipping commutes with the (symmetric) resize and padding: averaged at the grid.
        mirrored = self._forward(inputs.flip(-1), None if prompt is None else prompt.flip(-1))
        depth = 0.5 * (grid.depth + mirrored.depth.flip(-1))
        confidence = grid.confidence
        if confidence is not None:
            confidence = 0.5 * (confidence + mirrored.confidence.flip(-1))
        return Grid(depth, confidence)

    def predict(
        self,
        rgb: np.ndarray,
        output_range: tuple[float, float] | None = None,
        prompt_depth: np.ndarray | None = None,
    ) -> DepthResult:
        """Depth for one H×W×3 uint8 RGB image, at its own resolution, clamped to
        ``output_range`` (default: the estimator's) when the model is metric. ``prompt_depth``:
        metric depth (any size, metres, holes NaN or 0) for models that take one."""
        prompts = None if prompt_depth is None else [prompt_depth]
        return self.predict_batch([rgb], output_range, prompts)[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        output_range: tuple[float, float] | None = None,
        prompt_depths: Sequence[np.ndarray | None] | None = None,
    ) -> list[DepthResult]:
        """Several images (cameras), of any sizes, in one forward per model input size (one
        in all for fixed-size models); each result at its own image's resolution, the same as
        single calls. ``prompt_depths``: one per image (or None) for models that take one."""
        output_range = self.output_range if output_range is None else output_range
        check_depth_range(*output_range, "output range")
        images = [validate_rgb(rgb) for rgb in images]
        prompts = self._prompts(prompt_depths, len(images))
        if not images:
            return []
        start = time.perf_counter()
        # Images of one size (and prompt size) share their preprocessing; groups whose model
        # input sizes agree share a forward.
        groups: dict[tuple, list[int]] = {}
        for index, rgb in enumerate(images):
            prompt_shape = None if prompts[index] is None else prompts[index].shape
            groups.setdefault((rgb.shape[:2], prompt_shape), []).append(index)
        forwards: dict[tuple, list[tuple]] = {}
        for key in groups:
            input_size = self._input_size(key[0])
            forwards.setdefault((input_size, key[1]), []).append(key)
        batches = []
        for keys in forwards.values():
            inputs = torch.cat([self._model_inputs([images[i] for i in groups[k]]) for k in keys])
            prompt = None
            if keys[0][1] is not None:
                rows = [prompts[i] for k in keys for i in groups[k]]
                prompt = torch.from_numpy(np.stack(rows)[:, None]).to(self.device)
            batches.append((keys, inputs, prompt))
        self._sync()
        t_pre = time.perf_counter()
        grids = [
            (keys, self._grid(inputs) if prompt is None else self._grid(inputs, prompt))
            for keys, inputs, prompt in batches
        ]
        self._sync()
        t_inf = time.perf_counter()
        depth_maps: list[np.ndarray] = [np.empty(0)] * len(images)
        confidence_maps: list[np.ndarray | None] = [None] * len(images)
        for keys, (depth, confidence) in grids:
            first = 0
            for key in keys:
                indices = groups[key]
                rows = slice(first, first + len(indices))
                first += len(indices)
                group_depth, group_conf = self._to_image(
                    depth[rows], None if confidence is None else confidence[rows], key[0],
                    output_range,
                )  # fmt: skip
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

    def _prompts(
        self, prompt_depths: Sequence[np.ndarray | None] | None, count: int
    ) -> list[np.ndarray | None]:
        """One validated prompt (or None) per image; ValueError when the model needs one and
        an image has none, or takes none and one is given."""
        prompts = [None] * count if prompt_depths is None else list(prompt_depths)
        if len(prompts) != count:
            raise ValueError(f"got {len(prompts)} depth prompts for {count} images")
        given = [p is not None for p in prompts]
        if self.takes_depth_prompt and not all(given):
            raise ValueError(
                f"model {self.model_type} needs a depth prompt (metric depth, e.g. from an "
                "RGB-D camera or projected LiDAR) with every image; none was given"
            )
        if not self.takes_depth_prompt and any(given):
            raise ValueError(f"model {self.model_type} takes no depth prompt")
        return [None if p is None else validate_prompt_depth(p) for p in prompts]

    def _input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The model input size of an image; ValueError when an exported graph has another."""
        size = self.preprocessing.input_size_for(image_hw)
        fixed = tuple(self.preprocessing.input_size)
        if size[0] * size[1] > MAX_INPUT_AREA_FACTOR * fixed[0] * fixed[1]:
            # An extreme aspect ratio (or a huge image for GLPN's rule) would need a forward
            # that could exhaust memory: refused, not run.
            raise ValueError(
                f"a {image_hw[0]}x{image_hw[1]} image would become a {size[0]}x{size[1]} model "
                f"input, more than {MAX_INPUT_AREA_FACTOR} times the model's {fixed[0]}x{fixed[1]}"
            )
        if self.fixed_input_size and size != fixed:
            raise ValueError(
                f"the exported {self.model_type} graph takes {fixed[0]}x{fixed[1]} inputs, but "
                f"a {image_hw[0]}x{image_hw[1]} image becomes {size[0]}x{size[1]} (size rule "
                f"{self.preprocessing.size_rule}): export it with --input-size {size[0]} "
                f"{size[1]} for this camera, or use backend torch"
            )
        return size

    def _to_image(
        self,
        depth: torch.Tensor,
        confidence: torch.Tensor | None,
        image_hw: tuple[int, int],
        output_range: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Grid rows of images of one size → their depth (and confidence) maps."""
        depth, confidence = grid_to_image(
            depth, confidence, image_hw, self.preprocessing.padding_for(image_hw),
            self.backend.output_align_corners, self.output_resize_mode,
        )  # fmt: skip
        depth = grid_values_to_output(depth, self.output_kind, self.output_space)
        valid = torch.isfinite(depth)
        if self.output_kind == "metric":
            depth = depth.clamp(*output_range)
        depth = torch.where(valid, depth, torch.nan)[:, 0].float().cpu().numpy()
        if confidence is not None:
            confidence = confidence.clamp(0.0, 1.0)[:, 0].float().cpu().numpy()
        return depth, confidence

    def _model_inputs(self, same_size: list[np.ndarray]) -> torch.Tensor:
        """Normalized model inputs of images of one size."""
        # ascontiguousarray: views with negative or padded strides are valid input too.
        pixels = torch.from_numpy(np.stack([np.ascontiguousarray(rgb) for rgb in same_size]))
        pixels = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return preprocess(pixels, self.preprocessing)
