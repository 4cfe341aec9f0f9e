"""ONNX export and the ONNX Runtime backend: parity for every model type, metadata, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moa_depth_ros.cli.export import main
from moa_depth_ros.digests import file_sha256
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.onnx_format import OnnxError, read_onnx_metadata
from moa_depth_ros.inference.onnxruntime_backend import ProviderError, available_providers
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint

TINY = {
    "moa_depthclip": {"type": "moa_depthclip", "clip_model": "ViT-T-32-test",
                      "clip_pretrained": "none", "adapter_dim": 8, "gate_hidden": 16,
                      "num_bins": 32},
    "depthclip": {"type": "depthclip", "clip_model": "RN-T-test", "clip_pretrained": "none",
                  "image_size": [96, 128]},
    "space_clip": {"type": "space_clip", "clip_model": "ViT-T-16-test", "clip_pretrained": "none",
                   "image_size": 64, "decoder_channels": [32, 16, 8, 8], "film_hidden": 16},
    "depthblip2": {"type": "depthblip2", "size": "tiny", "temperature": 0.05},
}  # fmt: skip


def _model(kind: str):
    torch.manual_seed(0)
    model = build_model(TINY[kind]).eval()
    if kind == "space_clip":
        with torch.no_grad():  # random ReLU heads output ~0 everywhere: make depth vary
            model.depth_prediction_head[3].bias.fill_(2.0)
    return model


def _images(count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("kind", list(TINY))
def test_onnx_runtime_matches_torch_for_every_model_type(kind, tmp_path) -> None:
    model = _model(kind)
    torch_estimator = DepthEstimator(TorchBackend(model, "cpu"))
    path = tmp_path / f"{kind}.onnx"
    batch = 1 if kind == "depthblip2" else "dynamic"  # its transformers graph fixes the batch
    export_onnx(model, path, batch=batch)
    onnx_estimator = load_estimator(InferenceOptions(onnx_file=path, device="cpu", threads=1))
    assert onnx_estimator.backend.name == "onnxruntime" and onnx_estimator.precision == "fp32"
    assert onnx_estimator.backend.provider == "CPUExecutionProvider"
    images = _images()
    expected, got = torch_estimator.predict_batch(images), onnx_estimator.predict_batch(images)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.depth.shape == (120, 160)
        assert np.nanstd(theirs.depth) > 1e-4  # a real comparison, not of two constants
        assert np.nanmax(np.abs(ours.depth - theirs.depth)) <= 1e-4
        assert np.array_equal(np.isnan(ours.depth), np.isnan(theirs.depth))
        if theirs.confidence is None:
            assert ours.confidence is None
        else:
            assert np.max(np.abs(ours.confidence - theirs.confidence)) <= 1e-4


def test_metadata_round_trip_and_the_export_cli(tmp_path, capsys) -> None:
    model = _model("moa_depthclip")
    checkpoint = save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--batch", "dynamic"]) == 0
    printed = capsys.readouterr().out
    assert "moa_depthclip 224x224 fp32 batch dynamic" in printed and "parity vs torch" in printed
    parity = {p.split()[0]: float(p.split()[1]) for p in printed.split(": ")[-1].split(", ")}
    assert parity["depth"] <= 1e-4 and parity["confidence"] <= 1e-4
    metadata = read_onnx_metadata(out)
    assert metadata["model_type"] == "moa_depthclip"
    assert metadata["model_config"] == model.config
    assert metadata["preprocessing"] == model.preprocessing.to_dict() | {
        "input_size": list(model.preprocessing.input_size),
        "mean": list(model.preprocessing.mean),
        "std": list(model.preprocessing.std),
    }
    assert metadata["outputs"] == ["depth", "confidence"]
    assert metadata["source_sha256"] == file_sha256(checkpoint)
    from_file = load_estimator(InferenceOptions(out, device="cpu"))  # .onnx as the checkpoint
    assert from_file.backend.name == "onnxruntime" and from_file.model_type == "moa_depthclip"


def test_another_input_size_resamples_the_positional_embedding(tmp_path, capsys) -> None:
    model = _model("moa_depthclip")
    checkpoint = save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "m160.onnx"
    assert (
        main(["--checkpoint", str(checkpoint), "--out", str(out), "--input-size", "160", "224"])
        == 0
    )
    assert "moa_depthclip 160x224" in capsys.readouterr().out
    estimator = load_estimator(InferenceOptions(onnx_file=out, device="cpu"))
    assert estimator.preprocessing.input_size == (160, 224)
    assert estimator.predict(_images(1)[0]).depth.shape == (120, 160)


def test_backend_onnxruntime_exports_a_checkpoint_once(tmp_path) -> None:
    model = _model("moa_depthclip")
    checkpoint = save_checkpoint(model, tmp_path / "m.safetensors")
    cache = tmp_path / "cache"
    options = InferenceOptions(checkpoint, backend="onnxruntime", device="cpu", cache_dir=cache)
    estimator = load_estimator(options)
    exported = list((cache / "onnx").glob("*.onnx"))
    assert len(exported) == 1 and estimator.backend.name == "onnxruntime"
    again = load_estimator(options)
    assert again.backend.path == exported[0]  # the cached graph, not a second export
    torch_depth = load_estimator(InferenceOptions(checkpoint, device="cpu"))
    torch_depth = torch_depth.predict(_images(1)[0]).depth
    assert np.nanmax(np.abs(again.predict(_images(1)[0]).depth - torch_depth)) <= 1e-4


def test_export_leaves_the_model_as_it_was_and_no_partial_file(tmp_path) -> None:
    model = _model("moa_depthclip").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m16.onnx", precision="fp16")
    assert model.training
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    assert [p.name for p in tmp_path.iterdir()] == ["m16.onnx"]


def test_a_failed_export_leaves_nothing_at_the_destination(tmp_path, monkeypatch) -> None:
    def killed(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a graph")  # what a killed exporter leaves behind
        raise RuntimeError("exporter died")

    monkeypatch.setattr(torch.onnx, "export", killed)
    with pytest.raises(OnnxError, match="exporter died"):
        export_onnx(_model("moa_depthclip"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_provider_and_bad_files_are_one_line(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(_model("depthclip"), path)
    assert "CPUExecutionProvider" in available_providers()
    with pytest.raises(ProviderError) as error:
        load_estimator(InferenceOptions(onnx_file=path, provider="tensorrt"))
    message = str(error.value)
    assert "TensorrtExecutionProvider is not installed" in message
    assert "installed: " in message and "CPUExecutionProvider" in message and "\n" not in message
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01 not protobuf" * 10)
    with pytest.raises(OnnxError, match="garbage.onnx: not a readable ONNX file"):
        read_onnx_metadata(garbage)
    with pytest.raises(OnnxError, match="nothing.onnx: ONNX file not found"):
        load_estimator(InferenceOptions(onnx_file=tmp_path / "nothing.onnx"))
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime"):
        InferenceOptions(backend="tensorflow")


def test_export_cli_errors_exit_2(tmp_path, capsys) -> None:
    assert (
        main(["--checkpoint", str(tmp_path / "no.safetensors"), "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err
    assert "no.safetensors: checkpoint file not found" in err and len(err.strip().splitlines()) == 1
    assert not Path(tmp_path / "x").exists()


def _graph_with_metadata(path: Path, metadata: dict) -> Path:
    """A one-node graph carrying ``metadata`` (what a file of any age holds)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["depth"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "moa_depth_ros", json.dumps(metadata)
    onnx.save(proto, str(path))
    return path


def test_files_from_before_the_output_keys_are_bilinear_metric_depth(tmp_path) -> None:
    from moa_depth_ros.inference.onnx_format import ExportedGraph

    old = {"format_version": 1, "model_type": "depthclip", "model_config": {},
           "preprocessing": {"input_size": [4, 4], "mean": [0, 0, 0], "std": [1, 1, 1]},
           "precision": "fp32", "batch": 1, "outputs": ["depth"],
           "output_align_corners": False}  # fmt: skip
    graph = ExportedGraph(_graph_with_metadata(tmp_path / "old.onnx", old))
    assert (graph.output_kind, graph.output_space, graph.output_resize_mode) == (
        "metric", "depth", "bilinear",
    )  # fmt: skip
    assert graph.fixed_input_size and not graph.takes_depth_prompt
    bad = _graph_with_metadata(tmp_path / "bad.onnx", {**old, "output_kind": "metres"})
    with pytest.raises(OnnxError, match="bad.onnx: metadata output_kind 'metres' is not one of"):
        ExportedGraph(bad)
