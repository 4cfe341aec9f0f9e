"""ONNX Runtime sessions for exported depth models: providers, threads, TensorRT engine cache.

On a robot the estimator shares its cores with drivers and other nodes, so sessions run with
a bounded thread count and **no spin-waiting** (``session.intra_op.allow_spinning = 0``):
measured on 2 busy cores, torch's spinning OpenMP threads took 3 s per forward where ONNX
Runtime without spinning stayed near 0.4 s. Providers: CPU here; CUDA and TensorRT where
``onnxruntime-gpu`` (and TensorRT) are installed, with the TensorRT engine cached on disk
(the first build takes minutes; later starts load it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.models.preprocessing import Preprocessing
from moa_depth_ros.onnx_export import read_onnx_metadata
from moa_depth_ros.options import PROVIDER_CHOICES

log = logging.getLogger(__name__)

#: Provider choice (options.PROVIDER_CHOICES but auto) → ONNX Runtime provider names, in order
#: of preference.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ProviderError(ValueError):
    """The requested execution provider is not installed (the message names what is)."""


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def choose_providers(provider: str, device: str) -> list[str]:
    """The provider list for ``provider`` (auto: by ``device``); ProviderError if missing."""
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"onnx provider must be one of {PROVIDER_CHOICES}, got {provider!r}")
    installed = available_providers()
    if provider == "auto":
        gpu = device.startswith("cuda") or (
            device == "auto" and "CUDAExecutionProvider" in installed
        )
        provider = "cuda" if gpu else "cpu"
    wanted = PROVIDERS[provider][0]
    if wanted not in installed:
        raise ProviderError(
            f"ONNX Runtime provider {wanted} is not installed (installed: {', '.join(installed)}); "
            "on CUDA machines install onnxruntime-gpu (and TensorRT for TensorrtExecutionProvider)"
        )
    return [p for p in PROVIDERS[provider] if p in installed]


def default_threads() -> int:
    """Half the cores, at most 4: leave room for the camera driver and the rest of the robot."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class OnnxRunner:
    """One ONNX Runtime session of an exported model: normalized input in, grid outputs out."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        provider: str = "auto",
        threads: int = 0,
        engine_cache_dir: str | Path | None = None,
        fp16: bool = False,
    ):
        import onnxruntime

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)
        self.model_type = self.metadata["model_type"]
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.outputs = list(self.metadata["outputs"])
        self.align_corners = bool(self.metadata["output_align_corners"])
        providers = choose_providers(provider, device)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider_options: list[dict[str, Any]] = []
        for name in providers:
            if name == "TensorrtExecutionProvider":
                cache = Path(engine_cache_dir or Path.home() / ".cache" / "moa_depth_ros" / "trt")
                cache.mkdir(parents=True, exist_ok=True)
                provider_options.append(
                    {
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(cache),
                        "trt_fp16_enable": "True" if fp16 else "False",
                    }
                )
            else:
                provider_options.append({})
        start = time.perf_counter()
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=providers, provider_options=provider_options
        )
        self.load_seconds = time.perf_counter() - start
        self.provider = self.session.get_providers()[0]
        if self.provider == "TensorrtExecutionProvider":
            log.info("TensorRT engine for %s ready in %.1f s", self.path.name, self.load_seconds)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """B×3×h×w float32 (CPU or GPU tensor) → the exported outputs as CPU float32 tensors.
        A graph exported with a fixed batch is fed in chunks of that batch."""
        feed = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        batch = self.metadata["batch"]
        if batch == "dynamic" or feed.shape[0] == batch:
            chunks = [feed]
        elif feed.shape[0] % batch == 0:
            chunks = np.split(feed, feed.shape[0] // batch)
        else:
            raise ValueError(f"{self.path.name} takes batches of {batch}; got {feed.shape[0]}")
        parts = [self.session.run(self.outputs, {self.input_name: chunk}) for chunk in chunks]
        return [torch.from_numpy(np.concatenate(column)) for column in zip(*parts, strict=True)]
