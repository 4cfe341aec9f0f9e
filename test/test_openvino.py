"""The OpenVINO backend: exported graphs (fp32 and static int8) against ONNX Runtime and torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_onnx import TINY, _images, _model
from test_quantize import BOUND, FRAMES

from moa_depth_ros.cli.export import main
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.onnx_format import read_onnx_metadata
from moa_depth_ros.inference.openvino_backend import OpenVinoBackend
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models.checkpoint import save_checkpoint
from moa_depth_ros.options import BACKENDS


def _abs_rel(ours: list, theirs: list) -> float:
    return max(
        float(np.nanmean(np.abs(a.depth - b.depth) / b.depth))
        for a, b in zip(ours, theirs, strict=True)
    )


def test_fp32_graph_gives_onnx_runtime_depth_in_a_batch_and_in_chunks(tmp_path: Path) -> None:
    assert "openvino" in BACKENDS  # a parameter choice of the node and the CLIs
    model = _model("moa_depthclip")
    images = _images(2)
    for batch in ("dynamic", 1):  # a fixed-batch graph is fed in chunks
        path = tmp_path / f"moa_{batch}.onnx"
        export_onnx(model, path, batch=batch)
        ours = load_estimator(InferenceOptions(onnx_file=path, backend="openvino", threads=1))
        ort = load_estimator(InferenceOptions(onnx_file=path, device="cpu", threads=1))
        assert ours.backend.name == "openvino" and ours.precision == "fp32"
        got, expected = ours.predict_batch(images), ort.predict_batch(images)
        assert _abs_rel(got, expected) < 1e-5
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)


#: DepthCLIP's ResNet is convolutions, which stay fp32 for OpenVINO: refused (tested below).
VIT_KINDS = [kind for kind in TINY if kind != "depthclip"]


@pytest.mark.parametrize("kind", VIT_KINDS)
def test_int8_for_openvino_runs_int8_close_to_torch(kind: str, tmp_path: Path, capsys) -> None:
    bound = BOUND.get(kind, 0.01)
    checkpoint = save_checkpoint(_model(kind), tmp_path / f"{kind}.safetensors")
    out = tmp_path / f"{kind}.openvino.onnx"
    batch = "1" if kind == "depthblip2" else "dynamic"
    code = main([
        "--checkpoint", str(checkpoint), "--out", str(out), "--batch", batch, "--quantize",
        "int8", "--int8-for", "openvino", "--calibration-frames", FRAMES,
        "--max-abs-rel", str(bound),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert any(x.startswith("int8 (for openvino) vs fp32 on 3") for x in printed.splitlines())
    quantization = read_onnx_metadata(out)["quantization"]
    assert quantization["target"] == "openvino" and quantization["activations"] == "int8"
    assert quantization["method"] == {"matmul_gemm": "static_qdq_minmax", "conv": "fp32"}
    # OpenVINO cannot compile DepthBLIP-2's per-channel Q-Former MatMuls: per tensor there.
    assert quantization["per_channel"] == (kind != "depthblip2")
    assert quantization["quantize_linear_nodes"] > 0

    estimator = load_estimator(
        InferenceOptions(onnx_file=out, backend="openvino", device="cpu", threads=1)
    )
    assert estimator.precision == "int8" and estimator.backend.provider == "CPU"
    images = _images()
    reference = DepthEstimator(TorchBackend(_model(kind), "cpu")).predict_batch(images)
    got = estimator.predict_batch(images)
    assert got[0].depth.shape == (120, 160)
    assert _abs_rel(got, reference) <= bound
    assert (got[0].confidence is None) == (reference[0].confidence is None)


def test_cuda_and_reduced_precision_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "moa.onnx"
    export_onnx(_model("moa_depthclip"), path)
    with pytest.raises(ValueError, match="runs on the CPU, but device is 'cuda'"):
        OpenVinoBackend(path, device="cuda")
    with pytest.raises(ValueError, match="precision fp16 was asked for"):
        OpenVinoBackend(path, precision="fp16")


def test_a_graph_without_matmuls_is_refused_for_openvino(tmp_path: Path, capfd) -> None:
    checkpoint = save_checkpoint(_model("depthclip"), tmp_path / "depthclip.safetensors")
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "dc.onnx"), "--quantize",
            "int8", "--int8-for", "openvino", "--calibration-frames", "1"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if "moa-depth-export" in line]
    assert len(err) == 1 and "use --int8-for onnxruntime" in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ["depthclip.safetensors"]
