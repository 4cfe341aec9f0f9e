"""Estimator throughput vs the bare open_clip backbone, measured in the same run.

CPU target: estimator frames/s at 640×480 ≥ 0.85 × bare `encode_image` frames/s at the model's
input size (pre/post-processing must not dominate). On CUDA (when present): fp16 at batch 1
≥ 300 frames/s including pre/post-processing, plus batch-8 throughput.
"""

from __future__ import annotations

import os

import numpy as np
import open_clip
import torch

from bench.common import emit, summarize_ms, time_calls
from moa_depth_ros.estimator import DepthEstimator
from moa_depth_ros.models import build_model

REPEATS = int(os.environ.get("BENCH_REPEATS", "30"))


def _bare_backbone_fps(device: torch.device, precision: str, batch: int, size: int) -> dict:
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    autocast = (
        torch.autocast(device.type, dtype=torch.float16)
        if precision == "fp16"
        else torch.autocast(device.type, enabled=False)
    )

    @torch.inference_mode()
    def run() -> None:
        with autocast:
            clip.encode_image(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    stats = summarize_ms(time_calls(run, REPEATS))
    return {**stats, "fps": 1e3 * batch / stats["median_ms"]}


def _estimator_fps(estimator: DepthEstimator, batch: int) -> dict:
    images = [
        np.random.default_rng(i).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for i in range(batch)
    ]
    stats = summarize_ms(time_calls(lambda: estimator.predict_batch(images), REPEATS))
    stages = estimator.predict_batch(images)[0].timings
    return {
        **stats,
        "fps": 1e3 * batch / stats["median_ms"],
        "stages_ms": {k: round(1e3 * v, 3) for k, v in stages.items()},
    }


def main() -> None:
    torch.manual_seed(0)
    model = build_model({"type": "moa_depthclip", "clip_pretrained": "none"})
    estimator = DepthEstimator(model, device="cpu", precision="fp32")
    size = model.preprocessing.input_size[0]
    bare = _bare_backbone_fps(torch.device("cpu"), "fp32", 1, size)
    ours = _estimator_fps(estimator, 1)
    ratio = ours["fps"] / bare["fps"]
    emit(
        {
            "bench": "estimator_cpu",
            "model": "moa_depthclip ViT-B/32 (random init)",
            "input": "640x480",
            "precision": "fp32",
            "estimator": ours,
            "bare_encode_image": bare,
            "ratio": round(ratio, 3),
            "target_ratio": 0.85,
            "target_met": ratio >= 0.85,
        }
    )
    if not torch.cuda.is_available():
        emit({"bench": "estimator_cuda", "skipped": "no CUDA device on this machine"})
        return
    gpu = DepthEstimator(model, device="cuda", precision="fp16")
    for batch in (1, 8):
        result = _estimator_fps(gpu, batch)
        emit(
            {
                "bench": "estimator_cuda",
                "device": torch.cuda.get_device_name(0),
                "torch": torch.__version__,
                "precision": "fp16",
                "batch": batch,
                "input": "640x480",
                "estimator": result,
                "bare_encode_image": _bare_backbone_fps(torch.device("cuda"), "fp16", batch, size),
                **({"target_fps": 300, "target_met": result["fps"] >= 300} if batch == 1 else {}),
            }
        )
