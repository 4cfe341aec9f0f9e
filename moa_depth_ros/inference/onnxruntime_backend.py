"""The ONNX Runtime backend: exported graphs with bounded threads, CPU/CUDA/TensorRT providers.

On a robot the estimator shares its cores with drivers and other nodes, so sessions run with
a bounded thread count and **no spin-waiting** (``session.intra_op.allow_spinning = 0``):
measured on 2 busy cores, torch's spinning OpenMP threads took 3 s per forward where ONNX
Runtime without spinning stayed near 0.4 s. Providers: CPU here; CUDA and TensorRT where
``onnxruntime-gpu`` (and TensorRT) are installed, with the TensorRT engine cached on disk
(the first build takes minutes; later starts load it).

Precision: the graph's own (``moa-depth-export --quantize fp16|int8``). A requested precision
the graph and provider cannot give is refused, except fp16 on TensorRT, which builds an fp16
engine from an fp32 graph. An int8 graph runs int8 whatever is asked (fp32, the default,
included): it holds no fp32 weights to fall back to. It is made for the CPU provider.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.inference.onnx_export import cached_export
from moa_depth_ros.inference.onnx_format import ExportedGraph
from moa_depth_ros.inference.options import DEFAULT_CACHE_DIR, InferenceOptions
from moa_depth_ros.models.checkpoint import load_or_zero_shot
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
    """The provider list for ``provider`` (auto: by ``device``); ProviderError if missing,
    ValueError when the provider contradicts the device."""
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"onnx provider must be one of {PROVIDER_CHOICES}, got {provider!r}")
    installed = available_providers()
    if provider == "auto":
        gpu = device.startswith("cuda") or (
            device == "auto" and "CUDAExecutionProvider" in installed
        )
        provider = "cuda" if gpu else "cpu"
    if device == "cpu" and provider != "cpu":
        raise ValueError(f"onnx provider {provider} runs on CUDA but device is 'cpu'")
    if device.startswith("cuda") and provider == "cpu":
        raise ValueError(f"device {device!r} but onnx provider 'cpu': use provider auto or cuda")
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


def running_precision(graph: str, requested: str, provider: str) -> str:
    """The precision a session of a ``graph``-precision file really runs when ``requested``;
    ValueError when it cannot be given."""
    if requested == "fp32" or requested == graph:
        return graph
    if graph == "int8":
        raise ValueError(
            f"precision {requested} was asked for but the graph is int8 (moa-depth-export "
            "--quantize int8), which runs only as int8; leave precision at fp32 (runs int8), "
            "or export an fp32 or fp16 graph"
        )
    if requested == "fp16" and provider == "TensorrtExecutionProvider":
        return "fp16"  # TensorRT builds an fp16 engine from an fp32 graph
    raise ValueError(
        f"precision {requested} was asked for but the graph is {graph} and "
        f"{provider} cannot change that; export with moa-depth-export --quantize {requested} "
        "(fp16: or use onnx_provider tensorrt), or leave precision at fp32"
    )


class OnnxRuntimeBackend(ExportedGraph):
    """One ONNX Runtime session of an exported model: normalized input in, grid outputs out.

    Inputs are prepared on the CPU: the session copies them to its provider's device itself.
    """

    name = "onnxruntime"
    device = torch.device("cpu")

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        provider: str = "auto",
        threads: int = 0,
        cache_root: Path = DEFAULT_CACHE_DIR,
    ):
        import onnxruntime

        super().__init__(path)
        if self.int8_target == "openvino":
            log.warning("%s is an int8 graph for OpenVINO (backend openvino runs it faster)",
                        self.path.name)  # fmt: skip
        providers = choose_providers(provider, device)
        self.precision = running_precision(self.metadata["precision"], precision, providers[0])
        options = onnxruntime.SessionOptions()
        self.threads = threads or default_threads()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider_options: list[dict[str, Any]] = []
        for name in providers:
            if name == "TensorrtExecutionProvider":
                engines = cache_root / "tensorrt"
                engines.mkdir(parents=True, exist_ok=True)
                provider_options.append(
                    {
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(engines),
                        "trt_fp16_enable": "True" if self.precision == "fp16" else "False",
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
        parts = [self.session.run(self.outputs, {self.input_name: c}) for c in self.chunks(feed)]
        return [torch.from_numpy(np.concatenate(column)) for column in zip(*parts, strict=True)]


def open_backend(options: InferenceOptions) -> OnnxRuntimeBackend:
    """``options.onnx_file``, or its checkpoint (or zero-shot DepthCLIP) exported once into
    the cache."""
    path = options.onnx_file
    if not path:
        model, _ = load_or_zero_shot(options.checkpoint, options.clip_pretrained, options.verify)
        path = cached_export(
            model, options.checkpoint or None, options.precision, options.cache_root
        )
    return OnnxRuntimeBackend(
        path, options.device, options.precision, options.provider, options.threads,
        options.cache_root,
    )  # fmt: skip
