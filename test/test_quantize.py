"""int8 export: parity against fp32 and torch for every model type, the refusal, the backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import IMAGE, T0, write_messages
from test_onnx import TINY, _images, _model

from moa_depth_ros.bags.io import BagError
from moa_depth_ros.cli.export import calibration_frames, main
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_format import read_onnx_metadata
from moa_depth_ros.inference.onnxruntime_backend import running_precision
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models.checkpoint import save_checkpoint
from moa_depth_ros.msgs.rosbags_messages import image_message

#: AbsRel bound of int8 vs fp32 per tiny config. The 8-channel ResNet of tiny DepthCLIP loses
#: the most to its int8 convolutions (~1.2 %); the ViTs stay near 0.2 %.
BOUND = {"depthclip": 0.03}
FRAMES = "3"


def _export(kind: str, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    checkpoint = save_checkpoint(_model(kind), tmp_path / f"{kind}.safetensors")
    out = tmp_path / f"{kind}.int8.onnx"
    batch = "1" if kind == "depthblip2" else "dynamic"  # its transformers graph fixes the batch
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--batch", batch]
    return main([*argv, "--quantize", "int8", "--calibration-frames", FRAMES, *extra]), out


@pytest.mark.parametrize("kind", list(TINY))
def test_int8_export_stays_close_to_fp32_for_every_model_type(kind, tmp_path, capsys) -> None:
    bound = BOUND.get(kind, 0.01)
    code, out = _export(kind, tmp_path, "--max-abs-rel", str(bound))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"{kind} " in printed and " int8 batch " in printed
    line = next(x for x in printed.splitlines() if x.startswith("int8 vs fp32"))
    assert f"on {FRAMES} synthetic calibration frames: max |Δdepth| " in line and "AbsRel" in line
    metadata = read_onnx_metadata(out)
    quantization = metadata["quantization"]
    assert metadata["precision"] == "int8" and metadata["model_type"] == kind
    assert quantization["calibration"] == {"source": "synthetic", "frames": int(FRAMES)}
    assert quantization["per_channel"] and quantization["method"]["matmul_gemm"] == "dynamic"
    convs = "static_qdq_minmax" if kind in ("depthclip", "space_clip") else "fp32"
    assert quantization["method"]["conv"] == convs  # ViTs: one patch-embedding Conv, kept fp32
    assert 0 < quantization["parity_vs_fp32"]["abs_rel"] <= bound
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, f"{kind}.safetensors"]

    # The node and bag eval load it like any other graph; it says it runs int8.
    estimator = load_estimator(InferenceOptions(onnx_file=out, device="cpu", threads=1))
    assert estimator.precision == "int8" and estimator.backend.provider == "CPUExecutionProvider"
    reference = DepthEstimator(TorchBackend(_model(kind), "cpu"))
    images = _images()
    got, expected = estimator.predict_batch(images), reference.predict_batch(images)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.depth.shape == theirs.depth.shape == (120, 160)
        assert np.nanmean(np.abs(ours.depth - theirs.depth) / theirs.depth) <= bound
        assert (ours.confidence is None) == (theirs.confidence is None)


def test_too_much_accuracy_loss_is_refused_and_nothing_written(tmp_path, capfd) -> None:
    code, out = _export("depthclip", tmp_path, "--max-abs-rel", "1e-9")
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "int8 depthclip is too far from fp32 on 3 synthetic frames" in err
    assert "limit --max-abs-rel 1e-09" in err and "nothing written" in err
    assert [p.name for p in tmp_path.iterdir()] == ["depthclip.safetensors"]  # no work files


def test_int8_graph_runs_int8_and_refuses_fp16() -> None:
    assert running_precision("int8", "fp32", "CPUExecutionProvider") == "int8"
    assert running_precision("int8", "int8", "CPUExecutionProvider") == "int8"
    for provider in ("CPUExecutionProvider", "TensorrtExecutionProvider"):
        with pytest.raises(ValueError, match="the graph is int8 .* leave precision at fp32"):
            running_precision("int8", "fp16", provider)


def test_calibration_frames_from_a_bag(tmp_path) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(5)]
    write_messages(
        tmp_path / "bag",
        [(IMAGE, T0 + i, image_message(rgb, T0 + i, "cam")) for i, rgb in enumerate(frames)],
    )
    preprocessing = _model("depthclip").preprocessing
    inputs, info = calibration_frames(str(tmp_path / "bag"), preprocessing, 3, IMAGE)
    assert inputs.shape == (3, 3, *preprocessing.input_size) and inputs.dtype == np.float32
    assert info == {"source": str(tmp_path / "bag"), "topic": IMAGE, "frames": 3}
    with pytest.raises(BagError, match="topic '/nope' is not in bag .* topics present: "):
        calibration_frames(str(tmp_path / "bag"), preprocessing, 3, "/nope")


def test_quantize_fp16_is_precision_fp16_and_contradictions_exit_2(tmp_path, capsys) -> None:
    checkpoint = save_checkpoint(_model("depthclip"), tmp_path / "m.safetensors")
    out = tmp_path / "m16.onnx"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--quantize", "fp16"]) == 0
    assert read_onnx_metadata(out)["precision"] == "fp16"
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.onnx")]
    assert main([*argv, "--quantize", "int8", "--precision", "fp16"]) == 2
    assert "--precision fp16 contradicts --quantize int8" in capsys.readouterr().err
    assert main([*argv, "--quantize", "int8", "--calibration", str(tmp_path / "no_bag")]) == 2
    err = capsys.readouterr().err
    assert "no_bag' does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
