"""Distillation: what the robot gains per frame — the teacher vs the distilled student, timed
interleaved in one run on this machine.

Teacher: the full-size Depth Anything V2 Small architecture (DINOv2 ViT-S/14 backbone, DPT
head; 24.8 M parameters) built with transformers' ``DepthAnythingConfig`` / ``Dinov2Config`` at
the real sizes, random weights (speed does not depend on them), as an ``hf_depth`` checkpoint
on torch fp32 — exactly what ``distill.teacher`` and the node load. Student: the full-size
MoA-DepthCLIP ViT-B/32 (random init), exported and quantized as ``moa-depth-export --quantize
int8`` does (dynamic int8 MatMul/Gemm, 16 synthetic calibration frames), on ONNX Runtime.
Input 640×480 uint8, batch 1, both estimators end to end (preprocessing, network, resize of
the output to 640×480). ``BENCH_REPEATS`` sets the samples per model (default 10);
``BENCH_THREADS`` the threads of both (default: all cores).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import transformers as hf

from bench.bench_estimator import _interleaved
from bench.common import emit
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.quantize import calibration_inputs, export_int8, synthetic_rgb
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint

REPEATS = int(os.environ.get("BENCH_REPEATS", "10"))
THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1)))

#: Depth Anything V2 Small (depth-anything/Depth-Anything-V2-Small-hf): its config.json and
#: preprocessor_config.json values.
DA2_SMALL_BACKBONE = {
    "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "mlp_ratio": 4,
    "image_size": 518, "patch_size": 14, "layerscale_value": 1.0,
    "out_features": ["stage3", "stage6", "stage9", "stage12"], "reshape_hidden_states": False,
}  # fmt: skip
DA2_SMALL_HEAD = {
    "reassemble_hidden_size": 384, "neck_hidden_sizes": [48, 96, 192, 384],
    "reassemble_factors": [4, 2, 1, 0.5], "fusion_hidden_size": 64, "head_hidden_size": 32,
    "head_in_index": -1, "patch_size": 14, "depth_estimation_type": "relative",
}  # fmt: skip
DA2_PROCESSOR = {
    "size": {"height": 518, "width": 518}, "keep_aspect_ratio": True, "ensure_multiple_of": 14,
    "resample": 3, "do_pad": False, "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}  # fmt: skip


def _teacher(tmp: Path) -> tuple[DepthEstimator, int]:
    """The Depth Anything V2 Small architecture as an hf_depth checkpoint, loaded as the node
    (and distill.teacher) loads it; its parameter count."""
    torch.manual_seed(0)
    config = hf.DepthAnythingConfig(
        backbone_config=hf.Dinov2Config(**DA2_SMALL_BACKBONE), **DA2_SMALL_HEAD
    )
    model = hf.DepthAnythingForDepthEstimation(config).eval()
    parameters = sum(p.numel() for p in model.parameters())
    directory = tmp / "depth-anything-v2-small-architecture"
    model.save_pretrained(directory)
    hf.DPTImageProcessor(**DA2_PROCESSOR).save_pretrained(directory)
    built = build_model({"type": "hf_depth", "pretrained": str(directory)})
    checkpoint = save_checkpoint(built.eval(), tmp / "da2_small.safetensors")
    options = InferenceOptions(checkpoint=str(checkpoint), device="cpu", threads=THREADS)
    return load_estimator(options), parameters


def _student(tmp: Path) -> tuple[DepthEstimator, dict]:
    """The full-size MoA-DepthCLIP exported fp32, then int8 as --quantize int8 makes it."""
    torch.manual_seed(0)
    model = build_model({"type": "moa_depthclip", "clip_pretrained": "none"}).eval()
    fp32, int8 = tmp / "student.onnx", tmp / "student.int8.onnx"
    start = time.perf_counter()
    export_onnx(model, fp32)
    frames = calibration_inputs(synthetic_rgb(16), model.preprocessing)
    export_int8(fp32, int8, frames, {"source": "synthetic", "frames": len(frames)}, 1.0)
    export = {"export_s": round(time.perf_counter() - start, 1),
              "mb_int8": round(int8.stat().st_size / 2**20, 1)}  # fmt: skip
    estimator = load_estimator(InferenceOptions(onnx_file=str(int8), threads=THREADS))
    assert estimator.precision == "int8", estimator.precision
    return estimator, export


def main() -> None:
    torch.set_num_threads(THREADS)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp_name:
        tmp = Path(tmp_name)
        teacher, parameters = _teacher(tmp)
        student, export = _student(tmp)
        # The teacher's input at 640x480: aspect kept, sides multiples of 14 (518 x 686).
        teacher_input = teacher.preprocessing.input_size_for((480, 640))
        timed = _interleaved(
            {
                "teacher_torch_fp32": lambda: teacher.predict(image),
                "student_onnxruntime_int8": lambda: student.predict(image),
            },
            batch=1,
        )
    teacher_ms = timed["teacher_torch_fp32"]["median_ms"]
    student_ms = timed["student_onnxruntime_int8"]["median_ms"]
    emit(
        {
            "bench": "distill_teacher_vs_student",
            "input": "640x480",
            "threads": THREADS,
            "repeats": REPEATS,
            "onnxruntime": onnxruntime.__version__,
            "transformers": hf.__version__,
            "teacher": "Depth Anything V2 Small architecture (hf_depth, random), torch fp32",
            "teacher_parameters_m": round(parameters / 1e6, 2),
            "teacher_model_input_hw": list(teacher_input),
            "student": "MoA-DepthCLIP ViT-B/32 (random init), --quantize int8, ONNX Runtime CPU",
            **{f"student_{k}": v for k, v in export.items()},
            "teacher_ms": round(teacher_ms, 1),
            "teacher_p95_ms": round(timed["teacher_torch_fp32"]["p95_ms"], 1),
            "student_int8_ms": round(student_ms, 1),
            "student_int8_p95_ms": round(timed["student_onnxruntime_int8"]["p95_ms"], 1),
            "student_speedup": round(teacher_ms / student_ms, 1),
            # What labelling costs on this machine: the teacher's time per frame, per 1000.
            "teacher_labelling_s_per_1000_frames": round(teacher_ms, 0),
        }
    )


if __name__ == "__main__":
    main()
