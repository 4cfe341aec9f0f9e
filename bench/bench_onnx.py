"""Estimator backends: torch vs ONNX Runtime on the same full-size model, interleaved in one run.

CPU (targets on the 2-core development machine): at 2 threads the onnxruntime estimator ≥ 1.4×
the torch estimator's frames/s and ≥ 1.2× the bare open_clip torch backbone, and the int8 graph
(``moa-depth-export --quantize int8``, 16 synthetic calibration frames) ≥ 2.0× torch, and the
OpenVINO backend on the fp32 graph and on its ``--int8-for openvino`` graph; also at
1 thread, and under contention (a competing busy process per core), where torch's OpenMP threads
spin against it. CUDA (when present): torch fp16 vs ORT CUDA fp16 vs ORT TensorRT fp16, batch
1 and 8, with the device name (TensorRT only when its provider is installed).

Model: MoA-DepthCLIP ViT-B/32, random init (speed does not depend on the values), exported
once with the package's own exporter; input 640×480 uint8, output depth + confidence at
640×480. ``BENCH_REPEATS`` sets the samples per configuration (default 20).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.bench_estimator import _bare_backbone, _interleaved
from bench.common import emit
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.onnxruntime_backend import available_providers
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.quantize import (
    INT8_TARGETS,
    calibration_inputs,
    export_int8,
    synthetic_rgb,
)
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model

REPEATS = int(os.environ.get("BENCH_REPEATS", "20"))


def _busy() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _calls(torch_est: DepthEstimator, ort_est: DepthEstimator, bare, batch: int, more=None) -> dict:
    """Timed calls by name; ``more``: further estimators by name."""
    images = [
        np.random.default_rng(i).integers(0, 256, (480, 640, 3), np.uint8) for i in range(batch)
    ]
    calls = {
        "torch": lambda: torch_est.predict_batch(images),
        "onnxruntime": lambda: ort_est.predict_batch(images),
    }
    for name, estimator in (more or {}).items():
        calls[name] = lambda estimator=estimator: estimator.predict_batch(images)
    if bare is not None:
        calls["bare_encode_image"] = bare
    return calls


def _int8(onnx_file: Path, model, target: str) -> Path:
    """The fp32 graph quantized as ``moa-depth-export --quantize int8 --int8-for target``."""
    out = onnx_file.with_name(f"model_int8_{target}.onnx")
    frames = calibration_inputs(synthetic_rgb(16), model.preprocessing)
    calibration = {"source": "synthetic", "frames": len(frames)}
    start = time.perf_counter()
    metadata, parity = export_int8(onnx_file, out, frames, calibration, 1.0, target)
    quantization = metadata["quantization"]
    megabytes = {
        f"mb_{k}": round(p.stat().st_size / 2**20) for k, p in (("fp32", onnx_file), ("int8", out))
    }
    emit({"bench": "onnx_int8_export", "target": target,
          "seconds": round(time.perf_counter() - start, 1), "method": quantization["method"],
          **megabytes, "parity_vs_fp32_16_synthetic_frames": asdict(parity)})  # fmt: skip
    return out


def _cpu(model, graphs: dict[str, Path], threads: int, contention: bool) -> None:
    torch.set_num_threads(threads)
    torch_est = DepthEstimator(TorchBackend(model, "cpu"))

    def graph(name: str, backend: str = "onnxruntime") -> DepthEstimator:
        options = InferenceOptions(onnx_file=graphs[name], backend=backend, threads=threads)
        return load_estimator(options)

    ort_est = graph("fp32")
    more = {
        "onnxruntime_int8": graph("int8_onnxruntime"),
        "openvino_fp32": graph("fp32", "openvino"),
        "openvino_int8": graph("int8_openvino", "openvino"),
    }
    assert more["onnxruntime_int8"].precision == more["openvino_int8"].precision == "int8"
    bare = _bare_backbone(torch.device("cpu"), "fp32", 1, model.preprocessing.input_size[0])
    load = []
    if contention:
        load = [
            multiprocessing.Process(target=_busy, daemon=True) for _ in range(os.cpu_count() or 2)
        ]
        for process in load:
            process.start()
    try:
        timed = _interleaved(_calls(torch_est, ort_est, bare, 1, more), batch=1)
    finally:
        for process in load:
            process.terminate()
    ratio_torch = timed["onnxruntime"]["fps"] / timed["torch"]["fps"]
    ratio_bare = timed["onnxruntime"]["fps"] / timed["bare_encode_image"]["fps"]
    record = {
        "bench": "onnx_cpu",
        "threads": threads,
        "contention": contention,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        **{f"{name}_ms": round(t["median_ms"], 2) for name, t in timed.items()},
        "onnxruntime_over_torch": round(ratio_torch, 3),
        "onnxruntime_over_bare_backbone": round(ratio_bare, 3),
        "int8_over_onnxruntime": round(
            timed["onnxruntime_int8"]["fps"] / timed["onnxruntime"]["fps"], 3
        ),
        "int8_over_torch": round(timed["onnxruntime_int8"]["fps"] / timed["torch"]["fps"], 3),
        "openvino_int8_over_onnxruntime_int8": round(
            timed["openvino_int8"]["fps"] / timed["onnxruntime_int8"]["fps"], 3
        ),
        "openvino_int8_over_torch": round(timed["openvino_int8"]["fps"] / timed["torch"]["fps"], 3),
    }
    if threads == 2 and not contention:
        record["targets_met"] = {
            "over_torch_1.4": ratio_torch >= 1.4,
            "over_bare_1.2": ratio_bare >= 1.2,
            "int8_over_torch_2.0": record["int8_over_torch"] >= 2.0,
        }
    emit(record)


def _cuda(model, tmp: Path) -> None:
    device = torch.cuda.get_device_name(0)
    fp16 = tmp / "model_fp16.onnx"
    export_onnx(model, fp16, precision="fp16", batch="dynamic")
    fp32 = tmp / "model.onnx"  # TensorRT builds its own fp16 engine from the fp32 graph
    providers = available_providers()
    for batch in (1, 8):
        torch_est = DepthEstimator(TorchBackend(model, "cuda", "fp16"))
        calls = {"torch_fp16": _calls(torch_est, torch_est, None, batch)["torch"]}
        if "CUDAExecutionProvider" in providers:
            cuda = load_estimator(InferenceOptions(onnx_file=fp16, device="cuda", provider="cuda"))
            calls["ort_cuda_fp16"] = _calls(cuda, cuda, None, batch)["onnxruntime"]
        if "TensorrtExecutionProvider" in providers:
            trt = load_estimator(
                InferenceOptions(
                    onnx_file=fp32,
                    device="cuda",
                    precision="fp16",
                    provider="tensorrt",
                    cache_dir=tmp,
                )  # fmt: skip
            )
            calls["ort_tensorrt_fp16"] = _calls(trt, trt, None, batch)["onnxruntime"]
        timed = _interleaved(calls, batch=batch)
        emit({"bench": "onnx_cuda", "device": device, "batch": batch, "providers": providers,
              **{f"{k}_fps": round(v["fps"], 1) for k, v in timed.items()}})  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    model = build_model({"type": "moa_depthclip", "clip_pretrained": "none"}).eval()
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp_name:
        tmp = Path(tmp_name)
        onnx_file = tmp / "model.onnx"
        export_onnx(model, onnx_file, batch="dynamic")
        graphs = {"fp32": onnx_file}
        for target in INT8_TARGETS:
            graphs[f"int8_{target}"] = _int8(onnx_file, model, target)
        for threads in (1, 2):
            _cpu(model, graphs, threads, contention=False)
        _cpu(model, graphs, 2, contention=True)
        if torch.cuda.is_available():
            _cuda(model, tmp)
        else:
            emit({"bench": "onnx_cuda", "skipped": "no CUDA device on this machine"})


if __name__ == "__main__":
    main()
