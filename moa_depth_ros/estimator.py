"""DepthEstimator: numpy RGB in, metric depth (and confidence) at the input resolution out.

Preprocessing is the shared `models.preprocess`; it and the upsampling back to the camera
resolution run on the model's device, so only uint8 pixels go in and float32 depth comes out.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moa_depth_ros.checkpoint import load_checkpoint
from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.models import DepthModel, preprocess
from moa_depth_ros.onnx_runtime import OnnxRunner
from moa_depth_ros.options import BACKENDS, PRECISIONS

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class DepthResult:
    """depth: H×W float32 metres (NaN = invalid); confidence: H×W float32 in [0, 1] or None;
    timings: seconds per stage (preprocess, inference, postprocess, total)."""

    depth: np.ndarray
    confidence: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


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
    """Runs a depth model on numpy images; thread-compatible (one predict at a time).

    ``model`` is a torch ``DepthModel`` or an ``onnx_runtime.OnnxRunner`` (backend
    "onnxruntime"): both go through the same preprocessing, the same one bilinear resize from
    the model's grid to the image size, and the same clamping and NaN handling.
    """

    def __init__(
        self,
        model: DepthModel | OnnxRunner,
        device: str = "auto",
        precision: str = "fp32",
        min_depth: float | None = None,
        max_depth: float | None = None,
        compile: bool = False,
        warmup: bool = True,
        flip_tta: bool = False,
        channels_last: bool | None = None,
    ):
        # Flip test-time augmentation: the mean of the prediction and the mirrored prediction of
        # the mirrored image, at the output size (SPACE-CLIP's final evaluation).
        self.flip_tta = flip_tta
        self.model_type = model.model_type
        self.preprocessing = model.preprocessing
        if isinstance(model, OnnxRunner):
            self.backend, self.runner, self.model = "onnxruntime", model, None
            self.provider = model.provider
            self.device = torch.device("cpu")  # pre/post-processing; the session has its own
            self.precision = model.metadata["precision"]
            self.align_corners = model.align_corners
            self.memory_format = torch.contiguous_format
            config = model.metadata["model_config"]
        else:
            self.backend, self.runner = "torch", None
            self.device = resolve_device(device)
            check_precision(precision, self.device)
            self.precision = precision
            self.provider = f"torch {self.device}"
            self.align_corners = model.output_align_corners
            # None: as the model prefers. It converts the model's weights in place, so code
            # that keeps training the model (validation) passes False.
            if channels_last is None:
                channels_last = model.prefers_channels_last
            self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
            self.model = model.to(self.device, memory_format=self.memory_format).eval()
            # torch.compile specializes on shapes: the model input size is fixed, so one compile.
            grid = self.model.forward_grid
            self._forward_grid = torch.compile(grid) if compile else grid
            config = model.config
        # The default output range; predict() takes another one per call (the node's
        # runtime min_depth / max_depth) without changing the estimator.
        self.depth_range = (
            float(min_depth if min_depth is not None else config.get("min_depth", 1e-3)),
            float(max_depth if max_depth is not None else config.get("max_depth", 10.0)),
        )
        check_depth_range(*self.depth_range, "DepthEstimator")
        if warmup:
            h, w = self.preprocessing.input_size
            self.predict(np.zeros((h, w, 3), np.uint8))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "fp32",
        backend: str = "torch",
        provider: str = "auto",
        threads: int = 0,
        cache_dir: str | Path | None = None,
        verify: bool = True,
        **kwargs,
    ) -> DepthEstimator:
        """A checkpoint (``.safetensors``) or an exported ``.onnx`` file. With backend
        "onnxruntime" a checkpoint is exported once into ``cache_dir`` (keyed by its SHA-256).
        ``verify=False`` skips the checkpoint's tensor checksum (trusted files)."""
        path = Path(path)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if path.suffix == ".onnx":
            return cls.from_onnx(path, device, precision, provider, threads, cache_dir, **kwargs)
        model, _ = load_checkpoint(path, device="cpu", verify=verify)
        if backend == "torch":
            return cls(model, device=device, precision=precision, **kwargs)
        onnx_file = exported_onnx(model, path, precision, cache_dir)
        return cls.from_onnx(onnx_file, device, precision, provider, threads, cache_dir, **kwargs)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "fp32",
        provider: str = "auto",
        threads: int = 0,
        cache_dir: str | Path | None = None,
        **kwargs,
    ) -> DepthEstimator:
        """An exported model on ONNX Runtime; fp16 asks TensorRT for an fp16 engine."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        runner = OnnxRunner(
            path,
            device=device,
            provider=provider,
            threads=threads,
            engine_cache_dir=Path(cache_dir) / "tensorrt" if cache_dir else None,
            fp16=precision == "fp16",
        )
        kwargs.pop("channels_last", None)
        return cls(runner, **kwargs)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32" or self.backend != "torch":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _grid(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Depth and confidence at the model's grid, float32."""
        if self.runner is not None:
            outputs = self.runner.run(inputs)
            return outputs[0], outputs[1] if len(outputs) > 1 else None
        with self._autocast():
            out = self._forward_grid(inputs)
        confidence = out.confidence.float() if out.confidence is not None else None
        return out.depth.float(), confidence

    def _grid_with_tta(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        depth, confidence = self._grid(inputs)
        if self.flip_tta:
            # Flipping commutes with the (symmetric) bilinear resize: averaged at the grid.
            mirrored, mirrored_conf = self._grid(inputs.flip(-1))
            depth = 0.5 * (depth + mirrored.flip(-1))
            if confidence is not None:
                confidence = 0.5 * (confidence + mirrored_conf.flip(-1))
        return depth, confidence

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
        depth, confidence = self._grid_with_tta(inputs)
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
                align_corners=self.align_corners,
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
        return preprocess(pixels, self.preprocessing).contiguous(memory_format=self.memory_format)


def exported_onnx(
    model: DepthModel,
    source: str | Path | None,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
) -> Path:
    """``model`` exported once per source file (or config) and precision into ``cache_dir``."""
    import hashlib
    import json

    from moa_depth_ros.onnx_export import DynamicBatchError, export_onnx, sha256_of

    key = (
        sha256_of(source)
        if source
        else hashlib.sha256(json.dumps(model.config, sort_keys=True).encode()).hexdigest()
    )
    graph_precision = "fp16" if precision == "fp16" else "fp32"
    cache = Path(cache_dir or Path.home() / ".cache" / "moa_depth_ros")
    path = cache / "onnx" / f"{model.model_type}-{key[:16]}-{graph_precision}.onnx"
    if not path.is_file():
        try:
            export_onnx(model, path, graph_precision, batch="dynamic", source_checkpoint=source)
        except DynamicBatchError:  # a fixed-batch graph: the runner feeds it one image at a time
            export_onnx(model, path, graph_precision, batch=1, source_checkpoint=source)
    return path


#: The model a node or CLI runs when no checkpoint is given: zero-shot DepthCLIP needs nothing
#: but CLIP weights.
ZERO_SHOT_MODEL_TYPE = "depthclip"


def load_estimator(
    checkpoint: str | Path | None,
    clip_pretrained: str = "openai",
    device: str = "auto",
    precision: str = "fp32",
    backend: str = "torch",
    onnx_file: str | Path | None = None,
    provider: str = "auto",
    threads: int = 0,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    **kwargs,
) -> DepthEstimator:
    """The estimator for a checkpoint file (or an exported ``onnx_file``), or zero-shot
    DepthCLIP with ``clip_pretrained`` weights when neither is given: the one policy the node
    and every CLI share. ``backend`` "onnxruntime" exports a checkpoint once (``cache_dir``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    ort = {"provider": provider, "threads": threads, "cache_dir": cache_dir}
    if onnx_file:
        return DepthEstimator.from_onnx(onnx_file, device, precision, **ort, **kwargs)
    if checkpoint:
        return DepthEstimator.from_checkpoint(
            checkpoint, device, precision, backend, **ort, verify=verify, **kwargs
        )
    from moa_depth_ros.models import build_model

    model = build_model({"type": ZERO_SHOT_MODEL_TYPE, "clip_pretrained": clip_pretrained})
    if backend == "onnxruntime":
        path = exported_onnx(model, None, precision, cache_dir)
        return DepthEstimator.from_onnx(path, device, precision, **ort, **kwargs)
    return DepthEstimator(model, device=device, precision=precision, **kwargs)
