"""The one options object of ``load_estimator``: what to run, where, and how."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from moa_depth_ros.options import BACKENDS, PRECISIONS, PROVIDER_CHOICES

#: The cache of exported graphs (``onnx/``) and TensorRT engines (``tensorrt/``) by default.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "moa_depth_ros"


@dataclass(frozen=True)
class InferenceOptions:
    """Everything a node or CLI chooses about inference.

    ``checkpoint``: a ``.safetensors`` file (or an exported ``.onnx``), empty for zero-shot
    DepthCLIP with ``clip_pretrained`` weights. ``onnx_file``: an exported graph; it runs on
    ONNX Runtime unless ``backend`` names another graph backend. ``precision`` asks for reduced
    precision; a graph backend runs its graph's own precision and refuses one it cannot give.
    ``cache_dir``: exported graphs and TensorRT engines (default ``~/.cache/moa_depth_ros``).
    """

    checkpoint: str | Path | None = None
    clip_pretrained: str = "openai"
    backend: str = "torch"
    onnx_file: str | Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    provider: str = "auto"
    threads: int = 0
    cache_dir: str | Path | None = None
    verify: bool = True
    compile: bool = False
    flip_tta: bool = False
    #: The range metric depth is clamped to (None: the model's own, from its config).
    output_range: tuple[float, float] | None = None
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.provider not in PROVIDER_CHOICES:
            raise ValueError(
                f"onnx provider must be one of {', '.join(PROVIDER_CHOICES)}, got {self.provider!r}"
            )

    def resolved(self) -> InferenceOptions:
        """An ``.onnx`` checkpoint moved to ``onnx_file``; a graph on the default (torch)
        backend moved to ONNX Runtime."""
        options = self
        if options.checkpoint and Path(options.checkpoint).suffix == ".onnx":
            options = replace(options, onnx_file=options.checkpoint, checkpoint=None)
        if options.onnx_file and options.backend == "torch":
            options = replace(options, backend="onnxruntime")
        return options

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else DEFAULT_CACHE_DIR
