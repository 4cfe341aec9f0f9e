"""Estimator throughput vs the bare open_clip backbone, measured in the same run.

CPU target, for MoA-DepthCLIP (ViT-B/32) and SPACE-CLIP (ViT-B/16) each: estimator frames/s at
640×480 ≥ 0.85 × bare `encode_image` frames/s of its backbone at the model's input size
(pre/post-processing must not dominate; SPACE-CLIP's decoder is part of the estimator).
On CUDA (when present), each model: fp16 at batch 1 and 8 against its fp16 backbone
(MoA-DepthCLIP target ≥ 300 frames/s at batch 1; SPACE-CLIP's seed figure 5.2 ms/image).
"""

from __future__ import annotations

import os

import numpy as np
import open_clip
import torch

from bench.common import emit, summarize_ms, time_calls
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import DepthModel, build_model

REPEATS = int(os.environ.get("BENCH_REPEATS", "30"))


#: (label, model config, the open_clip backbone it runs) for the CPU comparison.
MODELS = (
    ("moa_depthclip ViT-B/32 (random init)", {"type": "moa_depthclip"}, "ViT-B-32-quickgelu"),
    ("space_clip ViT-B/16 (random init)", {"type": "space_clip"}, "ViT-B-16-quickgelu"),
)


def _bare_backbone(
    device: torch.device, precision: str, batch: int, size: int, name: str = "ViT-B-32-quickgelu"
):
    """A callable running open_clip's encode_image on a fixed batch (the reference)."""
    clip = open_clip.create_model(name, pretrained=None).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    dtype = torch.float16 if precision == "fp16" else torch.float32

    @torch.inference_mode()
    def run() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=precision == "fp16"):
            clip.encode_image(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def _estimator_call(estimator: DepthEstimator, batch: int):
    images = [
        np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for i in range(batch)
    ]
    return lambda: estimator.predict_batch(images)


def _interleaved(calls: dict, batch: int) -> dict[str, dict]:
    """Time the callables alternately, so drift on a shared machine hits all of them alike."""
    for fn in calls.values():
        time_calls(fn, 0, warmup=2)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(REPEATS):
        for name, fn in calls.items():
            times[name] += time_calls(fn, 1, warmup=0)
    result = {}
    for name, samples in times.items():
        stats = summarize_ms(samples)
        result[name] = {**stats, "fps": 1e3 * batch / stats["median_ms"]}
    return result


def _cpu(label: str, config: dict, backbone: str) -> tuple[str, DepthModel, str]:
    model = build_model({**config, "clip_pretrained": "none"})
    estimator = DepthEstimator(TorchBackend(model, "cpu", "fp32"))
    size = model.preprocessing.input_size[0]
    timed = _interleaved(
        {
            "bare_encode_image": _bare_backbone(torch.device("cpu"), "fp32", 1, size, backbone),
            "estimator": _estimator_call(estimator, 1),
        },
        batch=1,
    )
    ours, bare = timed["estimator"], timed["bare_encode_image"]
    ours["stages_ms"] = {
        k: round(1e3 * v, 3)
        for k, v in estimator.predict(np.zeros((480, 640, 3), np.uint8)).timings.items()
    }
    ratio = ours["fps"] / bare["fps"]
    emit(
        {
            "bench": "estimator_cpu",
            "model": label,
            "input": "640x480",
            "precision": "fp32",
            "estimator": ours,
            "bare_encode_image": bare,
            "ratio": round(ratio, 3),
            "target_ratio": 0.85,
            "target_met": ratio >= 0.85,
        }
    )
    return label, model, backbone


def main() -> None:
    torch.manual_seed(0)
    selected = os.environ.get("BENCH_MODELS")  # e.g. "space_clip" to run one
    models = [
        _cpu(*entry) for entry in MODELS if not selected or entry[1]["type"] in selected.split(",")
    ]
    if not torch.cuda.is_available():
        emit({"bench": "estimator_cuda", "skipped": "no CUDA device on this machine"})
        return
    for label, model, backbone in models:
        gpu = DepthEstimator(TorchBackend(model, "cuda", "fp16"))
        size = model.preprocessing.input_size[0]
        for batch in (1, 8):
            timed = _interleaved(
                {
                    "estimator": _estimator_call(gpu, batch),
                    "bare_encode_image": _bare_backbone(
                        torch.device("cuda"), "fp16", batch, size, backbone
                    ),
                },
                batch=batch,
            )
            result = timed["estimator"]
            target = {}
            if batch == 1 and model.model_type == "moa_depthclip":
                target = {"target_fps": 300, "target_met": result["fps"] >= 300}
            emit(
                {
                    "bench": "estimator_cuda",
                    "model": label,
                    "device": torch.cuda.get_device_name(0),
                    "torch": torch.__version__,
                    "precision": "fp16",
                    "batch": batch,
                    "input": "640x480",
                    "estimator": result,
                    "ms_per_image": result["median_ms"] / batch,
                    "bare_encode_image": timed["bare_encode_image"],
                    **target,
                }
            )
