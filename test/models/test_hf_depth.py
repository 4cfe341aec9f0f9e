"""Foundation depth models (``type: hf_depth``) on tiny random transformers models.

Each family is built at tiny size with transformers' own config classes
(``test/model_helpers/hf_models.py``), saved with ``save_pretrained`` (and its image processor)
into a temporary directory, and loaded through ``pretrained=DIR``; the reference is
transformers' ``pipeline("depth-estimation")`` (or, for Prompt Depth Anything, its processor +
model + ``post_process_depth_estimation``).

Tolerances: the model inputs equal the processor's ``pixel_values`` to 1e-6 (float rounding of
the fused rescale-and-normalize; the resized pixels are identical). The random networks amplify
that rounding, so depth is compared to 1e-4 of the reference's range (measured: at most 4e-5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as hf
from model_helpers.hf_models import FAMILIES, save_family
from PIL import Image
from safetensors.torch import save_file

from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.onnx_format import OnnxError, read_onnx_metadata
from moa_depth_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model, preprocess
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.models.hf_depth import build_processor, preprocessing_of

WIDE = (1e-4, 1e4)  # a depth range that clamps only what transformers' Depth Pro clamps
PIPELINE_FAMILIES = [name for name in FAMILIES if name != "prompt_depth_anything"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every family saved once (model + processor), as a user's local directory."""
    return {name: save_family(name, tmp_path_factory.mktemp(name)) for name in FAMILIES}


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Ramps, stripes and noise: a non-square image where resampling kernels differ."""
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 30, (h, w, 3))
    rgb = np.stack([(x * 4 + y * 2) % 256, (x * 7) % 256, (y * 9 + (x // 8) * 40) % 256], -1)
    return (rgb + noise).clip(0, 255).astype(np.uint8)


def _estimator(directory: Path, tmp_path: Path, **backend) -> DepthEstimator:
    """Through a written checkpoint, as the node loads it."""
    path = save_checkpoint(
        build_model({"type": "hf_depth", "pretrained": str(directory)}), tmp_path / "m.safetensors"
    )
    model, _ = load_checkpoint(path)
    return DepthEstimator(TorchBackend(model, "cpu", **backend))


def _assert_close_to(reference: np.ndarray, ours: np.ndarray) -> None:
    assert ours.shape == reference.shape
    spread = float(reference.max() - reference.min())
    assert spread > 1e-2 * max(1.0, float(np.abs(reference).max())) or spread > 0.5  # structure
    assert float(np.abs(ours - reference).max()) <= 1e-4 * spread


@pytest.mark.parametrize("name", list(FAMILIES))
def test_model_input_equals_the_processors_pixel_values(name, model_dirs) -> None:
    processor = hf.AutoImageProcessor.from_pretrained(model_dirs[name])  # as the pipeline
    assert processor.backend == "torchvision"
    family = json.loads((model_dirs[name] / "config.json").read_text())["model_type"]
    spec = preprocessing_of(family, build_processor(family, processor.to_dict()))
    for h, w in [(48, 64), (60, 80), (37, 91), (64, 48)]:
        rgb = _image(h, w)
        theirs = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        ours = preprocess(torch.from_numpy(rgb).permute(2, 0, 1)[None], spec)
        assert ours.shape == theirs.shape, (h, w)
        assert float((ours - theirs).abs().max()) <= 1e-6


@pytest.mark.parametrize("name", PIPELINE_FAMILIES)
def test_estimator_equals_the_depth_estimation_pipeline(name, model_dirs, tmp_path) -> None:
    estimator = _estimator(model_dirs[name], tmp_path)
    pipe = hf.pipeline("depth-estimation", model=str(model_dirs[name]))
    for h, w in [(48, 64), (60, 80)]:
        rgb = _image(h, w, seed=h)
        reference = pipe(Image.fromarray(rgb))["predicted_depth"].numpy()
        ours = estimator.predict(rgb, WIDE).depth
        if estimator.output_kind == "metric":
            reference = reference.clip(*WIDE)  # the estimator's clamp to the depth range
        _assert_close_to(reference, ours)
    expected_kind = "relative" if name in ("depth_anything_relative", "dpt") else "metric"
    assert estimator.output_kind == expected_kind


def test_prompt_depth_anything_equals_its_processor_and_model(model_dirs, tmp_path) -> None:
    directory = model_dirs["prompt_depth_anything"]
    estimator = _estimator(directory, tmp_path)
    processor = hf.AutoImageProcessor.from_pretrained(directory)
    model = hf.AutoModelForDepthEstimation.from_pretrained(directory).eval()
    rgb = _image(48, 64)
    millimetres = np.random.default_rng(1).uniform(500, 3500, (12, 16)).astype(np.float32)
    inputs = processor(images=Image.fromarray(rgb), prompt_depth=millimetres, return_tensors="pt")
    with torch.no_grad():
        reference = processor.post_process_depth_estimation(model(**inputs), [(48, 64)])
    reference = reference[0]["predicted_depth"].numpy().clip(*WIDE)  # bicubic undershoots 0
    ours = estimator.predict(rgb, WIDE, prompt_depth=millimetres / 1000.0).depth
    _assert_close_to(reference, ours)
    assert estimator.output_kind == "metric" and estimator.takes_depth_prompt
    # Batches with prompts of different sizes equal single calls.
    other = np.full((24, 32), 1.5, np.float32)  # constant: the processor's 1e-6 nudge
    batch = estimator.predict_batch([rgb, rgb], WIDE, [millimetres / 1000.0, other])
    np.testing.assert_allclose(batch[0].depth, ours, rtol=1e-5, atol=1e-5)
    single = estimator.predict(rgb, WIDE, prompt_depth=other).depth
    assert np.isfinite(single).all()
    np.testing.assert_allclose(batch[1].depth, single, rtol=1e-5, atol=1e-5)


def test_prompt_holes_are_zero_and_a_missing_prompt_is_refused(model_dirs, tmp_path) -> None:
    estimator = _estimator(model_dirs["prompt_depth_anything"], tmp_path)
    rgb = _image(48, 64)
    prompt = np.random.default_rng(2).uniform(0.5, 3.0, (12, 16)).astype(np.float32)
    holes = prompt.copy()
    holes[0, :4] = [np.nan, np.inf, -1.0, 0.0]
    zeros = prompt.copy()
    zeros[0, :4] = 0.0
    np.testing.assert_array_equal(
        estimator.predict(rgb, WIDE, prompt_depth=holes).depth,
        estimator.predict(rgb, WIDE, prompt_depth=zeros).depth,
    )
    with pytest.raises(ValueError, match="needs a depth prompt"):
        estimator.predict(rgb)
    with pytest.raises(ValueError, match="expected float metres"):
        estimator.predict(rgb, prompt_depth=np.ones((4, 4), np.uint16))
    with pytest.raises(ValueError, match="got 1 depth prompts for 2 images"):
        estimator.predict_batch([rgb, rgb], prompt_depths=[prompt])


def test_a_model_without_prompt_refuses_one(model_dirs, tmp_path) -> None:
    estimator = _estimator(model_dirs["depth_anything_metric"], tmp_path)
    with pytest.raises(ValueError, match="takes no depth prompt"):
        estimator.predict(_image(), prompt_depth=np.ones((4, 4), np.float32))


def test_relative_output_is_inverse_depth_never_clamped(model_dirs, tmp_path) -> None:
    estimator = _estimator(model_dirs["depth_anything_relative"], tmp_path)
    assert estimator.output_kind == "relative" and estimator.output_space == "inverse_depth"
    wide = estimator.predict(_image(), WIDE).depth
    narrow = estimator.predict(_image(), (5.0, 6.0)).depth
    np.testing.assert_array_equal(wide, narrow)
    assert narrow.min() < 5.0 or narrow.max() > 6.0  # values a metric model would have clamped


def test_input_size_follows_the_image_one_forward_per_size(model_dirs, tmp_path, monkeypatch):
    estimator = _estimator(model_dirs["depth_anything_metric"], tmp_path)
    spec = estimator.preprocessing
    # 48x64 and 47x63 both become 42x56 (aspect kept, multiples of 14); 60x80 becomes 56x70.
    assert spec.input_size_for((48, 64)) == spec.input_size_for((47, 63)) == (42, 56)
    assert spec.input_size_for((60, 80)) == (56, 70)
    images = [_image(48, 64, 1), _image(60, 80, 2), _image(47, 63, 3), _image(48, 64, 4)]
    singles = [estimator.predict(image, WIDE).depth for image in images]
    sizes = []
    real = estimator._grid
    monkeypatch.setattr(estimator, "_grid", lambda x: sizes.append(tuple(x.shape)) or real(x))
    batch = estimator.predict_batch(images, WIDE)
    assert sorted(sizes) == [(1, 3, 56, 70), (3, 3, 42, 56)]
    for single, result in zip(singles, batch, strict=True):
        _assert_close_to(single, result.depth)  # batched kernels round differently


def test_bf16_autocast_on_cpu(model_dirs, tmp_path) -> None:
    fp32 = _estimator(model_dirs["depth_anything_metric"], tmp_path).predict(_image(), WIDE)
    bf16 = _estimator(model_dirs["depth_anything_metric"], tmp_path, precision="bf16")
    assert bf16.precision == "bf16"
    depth = bf16.predict(_image(), WIDE).depth
    assert depth.dtype == np.float32 and np.isfinite(depth).all()
    spread = float(fp32.depth.max() - fp32.depth.min())
    assert float(np.abs(depth - fp32.depth).mean()) <= 0.05 * spread  # bf16: 8 mantissa bits


def test_checkpoint_is_self_contained(model_dirs, tmp_path) -> None:
    """Written from a directory, loaded after the directory is gone: config and processor
    come from the file (and no network: HF_HUB_OFFLINE=1 in these tests)."""
    import shutil

    source = tmp_path / "source"
    shutil.copytree(model_dirs["depth_anything_metric"], source)
    model = build_model({"type": "hf_depth", "pretrained": str(source)}).eval()
    path = save_checkpoint(model, tmp_path / "da.safetensors")
    shutil.rmtree(source)
    loaded, metadata = load_checkpoint(path)
    assert metadata["model_config"]["hf_config"]["model_type"] == "depth_anything"
    assert metadata["model_config"]["processor_config"]["ensure_multiple_of"] == 14
    assert metadata["model_config"]["max_depth"] == 20.0  # the metric head's max_depth
    images = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        assert torch.equal(model.forward_grid(images).depth, loaded.forward_grid(images).depth)


def test_checkpoint_cli(model_dirs, tmp_path, capsys) -> None:
    from moa_depth_ros.cli.checkpoint import main

    out = tmp_path / "glpn.safetensors"
    directory = model_dirs["glpn"]
    assert main(["--type", "hf_depth", "--set", f"pretrained={directory}", "--out", str(out)]) == 0
    assert "hf_depth" in capsys.readouterr().out
    model, metadata = load_checkpoint(out)
    assert model.family == "glpn" and metadata["model_config"]["pretrained"] == str(directory)
    assert main(["--type", "hf_depth", "--set", f"pretrained={tmp_path}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no config.json" in err and len(err.strip().splitlines()) == 1


def test_directories_that_are_not_depth_models_are_one_line(model_dirs, tmp_path) -> None:
    with pytest.raises(ValueError, match=f"^{tmp_path}: no config.json"):
        build_model({"type": "hf_depth", "pretrained": str(tmp_path)})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model type 'bert' is not a depth estimation model"):
        build_model({"type": "hf_depth", "pretrained": str(tmp_path)})
    with pytest.raises(ValueError, match="no such model directory"):
        build_model({"type": "hf_depth", "pretrained": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="needs 'pretrained'"):
        build_model({"type": "hf_depth"})
    with pytest.raises(ValueError, match="config key 'output_kind'"):
        build_model({"type": "hf_depth", "pretrained": "x", "output_kind": "metres"})
    # Pickled weights only: never loaded.
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    model = hf.AutoModelForDepthEstimation.from_pretrained(model_dirs["glpn"])
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for name in ("config.json", "preprocessor_config.json"):
        (pickled / name).write_text((model_dirs["glpn"] / name).read_text())
    with pytest.raises(ValueError, match="safetensors only") as info:
        build_model({"type": "hf_depth", "pretrained": str(pickled)})
    assert str(pickled) in str(info.value) and "\n" not in str(info.value)
    # A tensor missing from the weights: refused, not initialized at random.
    partial = tmp_path / "partial"
    partial.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    del state["head.head.0.weight"]
    save_file(state, str(partial / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "preprocessor_config.json"):
        (partial / name).write_text((model_dirs["glpn"] / name).read_text())
    with pytest.raises(ValueError, match=f"^{partial}: the weights lack 1 tensor.*head.head.0"):
        build_model({"type": "hf_depth", "pretrained": str(partial)})


def test_a_hub_id_offline_is_one_line() -> None:
    with pytest.raises(ValueError) as info:
        build_model({"type": "hf_depth", "pretrained": "nobody-here/not-cached-depth-model"})
    message = str(info.value)
    assert message == (
        "nobody-here/not-cached-depth-model: not a local directory, and the Hugging Face hub id "
        "cannot be downloaded offline (HF_HUB_OFFLINE=1 or no network); pass a local model "
        "directory"
    )


def test_unsupported_processor_settings_are_refused(model_dirs) -> None:
    config = json.loads((model_dirs["depth_anything_metric"] / "config.json").read_text())
    processor = {"size": {"height": 56, "width": 56}, "resample": 0}  # nearest
    with pytest.raises(ValueError, match="resample .* is not bilinear or bicubic"):
        build_model({"type": "hf_depth", "hf_config": config, "processor_config": processor})
    processor = {"size": {"height": 56, "width": 56}, "do_pad": True, "size_divisor": 14}
    with pytest.raises(ValueError, match="do_pad"):
        build_model({"type": "hf_depth", "hf_config": config, "processor_config": processor})


# ONNX: which families export (tiny configs, torch 2.14 dynamo exporter, ONNX Runtime 1.32).
ONNX_FAMILIES = ["depth_anything_relative", "glpn"]
ONNX_SLOW_FAMILIES = ["depth_anything_metric", "depth_pro", "dpt"]


def _onnx_parity(name: str, model_dirs, tmp_path) -> None:
    model = build_model({"type": "hf_depth", "pretrained": str(model_dirs[name])}).eval()
    size = model.preprocessing.input_size_for((48, 64))
    path = tmp_path / f"{name}.onnx"
    batch = 1 if name == "depth_pro" else "dynamic"  # Depth Pro's graph fixes the batch
    metadata = export_onnx(model, path, batch=batch, input_size=size)
    assert metadata["preprocessing"]["input_size"] == size
    assert metadata["output_kind"] == model.output_kind
    assert metadata["output_space"] == model.output_space
    assert metadata["output_resize_mode"] == model.output_resize_mode
    graph = DepthEstimator(OnnxRuntimeBackend(path, "cpu", threads=1))
    torch_estimator = DepthEstimator(TorchBackend(model, "cpu"))
    rgb = _image(48, 64)
    _assert_close_to(torch_estimator.predict(rgb, WIDE).depth, graph.predict(rgb, WIDE).depth)
    assert graph.output_kind == model.output_kind


@pytest.mark.parametrize("name", ONNX_FAMILIES)
def test_onnx_runtime_matches_torch(name, model_dirs, tmp_path) -> None:
    _onnx_parity(name, model_dirs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ONNX_SLOW_FAMILIES)
def test_onnx_runtime_matches_torch_slow(name, model_dirs, tmp_path) -> None:
    _onnx_parity(name, model_dirs, tmp_path)


def test_a_graph_refuses_images_of_another_input_size(model_dirs, tmp_path, capsys) -> None:
    from moa_depth_ros.cli.export import main

    model = build_model({"type": "hf_depth", "pretrained": str(model_dirs["glpn"])}).eval()
    checkpoint = save_checkpoint(model, tmp_path / "glpn.safetensors")
    path = tmp_path / "glpn.onnx"
    # 32x64: what a 48x64 camera becomes.
    argv = ["--checkpoint", str(checkpoint), "--out", str(path), "--input-size", "32", "64"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "hf_depth 32x64 fp32 batch 1" in printed
    assert float(printed.split("parity vs torch (max |difference|): depth ")[1].split()[0]) < 1e-3
    graph = DepthEstimator(OnnxRuntimeBackend(path, "cpu", threads=1))
    assert graph.predict(_image(48, 64)).depth.shape == (48, 64)
    with pytest.raises(ValueError) as info:
        graph.predict(_image(70, 64))
    assert str(info.value) == (
        "the exported hf_depth graph takes 32x64 inputs, but a 70x64 image becomes 64x64 (size "
        "rule floor_multiple): export it with --input-size 64 64 for this camera, or use "
        "backend torch"
    )
    with pytest.raises(OnnxError, match="input size 40x64: not a size the hf_depth processor"):
        export_onnx(model, tmp_path / "bad.onnx", input_size=(40, 64))
    argv[-2:] = ["40", "64"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "input size 40x64: not a size the hf_depth processor gives" in err
    assert len(err.strip().splitlines()) == 1
    assert read_onnx_metadata(path)["output_kind"] == "metric"


@pytest.mark.parametrize("name", ["prompt_depth_anything", "zoedepth"])
def test_families_that_do_not_export_stay_on_torch(name, model_dirs, tmp_path) -> None:
    model = build_model({"type": "hf_depth", "pretrained": str(model_dirs[name])})
    with pytest.raises(OnnxError, match="it stays on torch") as info:
        export_onnx(model, tmp_path / "m.onnx")
    assert name in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_int8_calibration_frames_take_the_graphs_input_size(model_dirs) -> None:
    """Calibration frames of any size become the exported graph's input (an aspect-kept
    Depth Anything graph takes one size)."""
    from moa_depth_ros.inference.onnx_export import at_input_size
    from moa_depth_ros.inference.quantize import calibration_inputs

    model = build_model(
        {"type": "hf_depth", "pretrained": str(model_dirs["depth_anything_relative"])}
    )
    graph_model = at_input_size(model, (42, 56))
    assert graph_model.preprocessing.input_size == (42, 56) and graph_model.net is model.net
    frames = calibration_inputs([_image(48, 64), _image(480, 640)], graph_model.preprocessing)
    assert frames.shape == (2, 3, 42, 56)
