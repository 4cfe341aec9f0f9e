"""The OpenVINO backend: exported graphs on a robot's CPU (x86 or ARM), bounded threads.

OpenVINO reads the same ``.onnx`` files as ONNX Runtime (their metadata says what they are).
Its int8 kernels take graphs quantized **static** QDQ (``moa-depth-export --quantize int8
--int8-for openvino``): on this project's 2-core AVX512-VNNI CPU that runs MoA-DepthCLIP
ViT-B/32 in 21 ms against 31 ms for ONNX Runtime's dynamic int8 graph (docs/benchmarks.md).
A dynamic-int8 graph (made for ONNX Runtime) runs here at fp32 speed, so it gets a warning.

Non-quantized operations run in fp32 (``INFERENCE_PRECISION_HINT``: no bf16 downcast on CPUs
that have it), so an fp32 graph gives ONNX Runtime's depth to float rounding. CPU only: a
CUDA device or a reduced precision the graph does not have is refused with the reason.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.inference.onnx_export import cached_export
from moa_depth_ros.inference.onnx_format import ExportedGraph
from moa_depth_ros.inference.onnxruntime_backend import default_threads
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.models.checkpoint import load_or_zero_shot

log = logging.getLogger(__name__)


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, never released: when the last Core and compiled
    model go, OpenVINO unloads its CPU plugin, and a signal delivered after that (Ctrl-C after
    a lifecycle cleanup and configure) crashed the process with SIGSEGV (OpenVINO 2026.4)."""
    import openvino

    return openvino.Core()


class OpenVinoBackend(ExportedGraph):
    """One compiled OpenVINO model of an exported graph: normalized input in, grid outputs out."""

    name = "openvino"
    device = torch.device("cpu")
    provider = "CPU"

    def __init__(
        self, path: str | Path, device: str = "cpu", precision: str = "fp32", threads: int = 0
    ):
        super().__init__(path)
        if device.startswith("cuda"):
            raise ValueError(
                f"backend openvino runs on the CPU, but device is {device!r}: use device cpu "
                "(or auto), or backend onnxruntime / torch for CUDA"
            )
        graph = self.metadata["precision"]
        if precision not in ("fp32", graph):
            raise ValueError(
                f"precision {precision} was asked for but backend openvino runs the graph's "
                f"own precision ({graph}); leave precision at fp32"
            )
        self.precision = graph
        if self.int8_target == "onnxruntime":
            log.warning(
                "%s is an int8 graph for ONNX Runtime: OpenVINO runs it at fp32 speed; export "
                "with --int8-for openvino", self.path.name,
            )  # fmt: skip
        self.threads = threads or default_threads()
        start = time.perf_counter()
        core = openvino_core()
        self.compiled = core.compile_model(
            core.read_model(str(self.path)),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self.request = self.compiled.create_infer_request()
        self.load_seconds = time.perf_counter() - start
        by_name = {name: port for port in self.compiled.outputs for name in port.get_names()}
        self.ports = [by_name[name] for name in self.outputs]

    def run(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """B×3×h×w float32 → the exported outputs as CPU float32 tensors."""
        feed = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        parts = []
        for chunk in self.chunks(feed):
            results = self.request.infer({0: chunk})
            parts.append([np.array(results[port], dtype=np.float32) for port in self.ports])
        return [torch.from_numpy(np.concatenate(column)) for column in zip(*parts, strict=True)]


def open_backend(options: InferenceOptions) -> OpenVinoBackend:
    """``options.onnx_file``, or its checkpoint (or zero-shot DepthCLIP) exported once (fp32)
    into the cache."""
    path = options.onnx_file
    if not path:
        model, _ = load_or_zero_shot(options.checkpoint, options.clip_pretrained, options.verify)
        path = cached_export(model, options.checkpoint or None, "fp32", options.cache_root)
    return OpenVinoBackend(path, options.device, options.precision, options.threads)
