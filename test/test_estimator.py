"""DepthEstimator: sizes, batching, checkpoint equivalence, validation, devices, precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.torch_backend import TorchBackend, resolve_device
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def estimator():
    torch.manual_seed(0)
    from conftest import TINY_MOA

    return DepthEstimator(TorchBackend(build_model(TINY_MOA), "cpu"))


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("h", "w"), [(480, 640), (720, 1280), (240, 320), (233, 417)])
def test_output_has_input_resolution(estimator, h, w):
    result = estimator.predict(_image(h, w))
    assert result.depth.shape == (h, w) and result.depth.dtype == np.float32
    assert result.confidence.shape == (h, w) and result.confidence.dtype == np.float32
    assert np.isfinite(result.depth).all()
    low, high = estimator.output_range
    assert result.depth.min() >= low and result.depth.max() <= high
    assert result.confidence.min() >= 0.0 and result.confidence.max() <= 1.0
    assert set(result.timings) >= {"preprocess", "inference", "postprocess", "total"}


def test_batch_equals_single_calls(estimator):
    images = [_image(240, 320, 1), _image(480, 640, 2), _image(240, 320, 3)]
    batch = estimator.predict_batch(images)
    for image, result in zip(images, batch, strict=True):
        single = estimator.predict(image)
        np.testing.assert_allclose(result.depth, single.depth, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.confidence, single.confidence, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ["TINY_MOA", "TINY_DEPTHCLIP", "TINY_SPACE_CLIP",
                                    "TINY_DEPTHBLIP2"])  # fmt: skip
def test_cameras_of_different_sizes_share_one_forward_and_match_single_calls(config, monkeypatch):
    import conftest

    estimator = DepthEstimator(TorchBackend(build_model(getattr(conftest, config)), "cpu"))
    images = [_image(48, 64, 1), _image(120, 160, 2), _image(48, 64, 3), _image(75, 100, 4)]
    singles = [estimator.predict(image) for image in images]
    forwards = []
    real = estimator._grid
    monkeypatch.setattr(estimator, "_grid", lambda x: forwards.append(len(x)) or real(x))
    batch = estimator.predict_batch(images)
    assert forwards == [4]
    for image, result, single in zip(images, batch, singles, strict=True):
        assert result.depth.shape == image.shape[:2]
        np.testing.assert_allclose(result.depth, single.depth, rtol=1e-4, atol=1e-5)
        if single.confidence is not None:
            np.testing.assert_allclose(result.confidence, single.confidence, atol=1e-5)
    assert estimator.predict_batch([]) == []


def test_checkpoint_and_in_memory_model_agree(tmp_path, tiny_moa_config):
    model = build_model(tiny_moa_config)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    image = _image(480, 640)
    in_memory = DepthEstimator(TorchBackend(model, "cpu")).predict(image)
    from_file = load_estimator(InferenceOptions(path, device="cpu")).predict(image)
    np.testing.assert_array_equal(in_memory.depth, from_file.depth)


def test_depth_is_clamped_and_invalid_becomes_nan(estimator, monkeypatch):
    from moa_depth_ros.models import DepthModel

    real = DepthModel.resize_output

    def with_bad_values(depth, confidence, size, align_corners=False, mode="bilinear"):
        depth, confidence = real(depth, confidence, size, align_corners, mode)
        depth[..., 0, 0] = torch.nan
        depth[..., 0, 1] = torch.inf
        depth[..., 0, 2] = 50.0
        depth[..., 0, 3] = 0.0
        return depth, confidence

    monkeypatch.setattr(DepthModel, "resize_output", staticmethod(with_bad_values))
    depth = estimator.predict(_image(120, 160)).depth
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1])
    assert depth[0, 2] == pytest.approx(estimator.output_range[1])
    assert depth[0, 3] == pytest.approx(estimator.output_range[0])
    assert np.isfinite(depth[1:]).all()


def test_depth_range_per_call_leaves_the_estimator_unchanged(estimator):
    image = _image(120, 160)
    default = estimator.output_range
    depth = estimator.predict(image, output_range=(0.5, 0.6)).depth
    assert depth.min() >= 0.5 and depth.max() <= 0.6
    assert estimator.output_range == default
    assert estimator.predict(image).depth.max() > 0.6  # the next call is unclamped again
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        estimator.predict(image, output_range=(2.0, 1.0))


def test_load_estimator_without_checkpoint_is_zero_shot_depthclip(monkeypatch):
    built = {}

    def fake_build(config):
        built.update(config)
        return build_model({**config, "clip_model": "RN-T-test", "image_size": [64, 64]})

    monkeypatch.setattr("moa_depth_ros.models.checkpoint.build_model", fake_build)
    estimator = load_estimator(InferenceOptions("", clip_pretrained="none", device="cpu"))
    assert built == {"type": "depthclip", "clip_pretrained": "none"}
    assert estimator.model_type == "depthclip"


def test_load_estimator_with_checkpoint(tmp_path, tiny_moa_config):
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "m.safetensors")
    estimator = load_estimator(InferenceOptions(path, device="cpu"))
    assert estimator.model_type == "moa_depthclip" and estimator.backend.name == "torch"


def test_non_contiguous_views_work(estimator):
    image = _image(480, 640)
    flipped = image[:, ::-1]
    strided = _image(480, 1280)[:, ::2]
    np.testing.assert_array_equal(
        estimator.predict(flipped).depth, estimator.predict(flipped.copy()).depth
    )
    assert estimator.predict(strided).depth.shape == (480, 640)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((48, 64, 3), np.float32), "dtype float32"),
        (np.zeros((48, 64), np.uint8), "2-D"),
        (np.zeros((48, 64, 4), np.uint8), "4 channels"),
        (np.zeros((0, 64, 3), np.uint8), "empty image"),
        ([[1, 2, 3]], "got list"),
    ],
)
def test_bad_input_names_the_problem(estimator, bad, message):
    with pytest.raises(ValueError, match=message):
        estimator.predict(bad)


def test_device_and_precision_errors(tiny_moa_config):
    model = build_model(tiny_moa_config)
    with pytest.raises(ValueError, match="'fp16' is not supported on CPU"):
        TorchBackend(model, "cpu", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(model, "cpu", "int8")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:0' requested but CUDA is not available"):
            resolve_device("cuda:0")


def test_bf16_on_cpu_close_to_fp32(tiny_moa_config):
    model = build_model(tiny_moa_config)
    image = _image(120, 160)
    fp32 = DepthEstimator(TorchBackend(model, "cpu")).predict(image).depth
    bf16 = DepthEstimator(TorchBackend(model, "cpu", "bf16")).predict(image).depth
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, rtol=0.1)


def test_depthclip_estimator(tiny_depthclip_config):
    estimator = DepthEstimator(TorchBackend(build_model(tiny_depthclip_config), "cpu"))
    depth = estimator.predict(_image(480, 640)).depth
    assert depth.shape == (480, 640)
    assert depth.min() >= 1.0 - 1e-5 and depth.max() <= 3.0 + 1e-5


def test_flip_tta_averages_with_the_mirrored_prediction(tiny_moa_config):
    model = build_model(tiny_moa_config)
    plain = DepthEstimator(TorchBackend(model, "cpu"))
    tta = DepthEstimator(TorchBackend(model, "cpu"), flip_tta=True)
    image = _image(120, 160, 4)
    expected = 0.5 * (plain.predict(image).depth + plain.predict(image[:, ::-1]).depth[:, ::-1])
    np.testing.assert_allclose(tta.predict(image).depth, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(tta.predict(image).depth, plain.predict(image).depth)


def _with_size_rule(config: dict, target: tuple[int, int], multiple: int):
    """A tiny model whose input keeps each image's aspect ratio (as Depth Anything's): the
    RN-T DepthCLIP runs any multiple of 32."""
    from dataclasses import replace

    model = build_model(config)
    model.preprocessing = replace(model.preprocessing, size_rule="keep_aspect",
                                  size_target=target, size_multiple=multiple)  # fmt: skip
    return model


def test_one_forward_per_model_input_size(tiny_depthclip_config, monkeypatch):
    estimator = DepthEstimator(
        TorchBackend(_with_size_rule(tiny_depthclip_config, (96, 128), 32), "cpu")
    )
    # 48x64 and 72x96 keep the 3:4 aspect → 96x128; 120x120 → 128x128 (widths change least).
    images = [_image(48, 64, 1), _image(120, 120, 2), _image(72, 96, 3)]
    singles = [estimator.predict(image) for image in images]
    shapes = []
    real = estimator._grid
    monkeypatch.setattr(estimator, "_grid", lambda x: shapes.append(tuple(x.shape)) or real(x))
    batch = estimator.predict_batch(images)
    assert sorted(shapes) == [(1, 3, 128, 128), (2, 3, 96, 128)]
    for image, single, result in zip(images, singles, batch, strict=True):
        assert result.depth.shape == image.shape[:2]
        np.testing.assert_allclose(result.depth, single.depth, rtol=1e-4, atol=1e-5)


def test_an_extreme_aspect_ratio_is_refused_not_run(tiny_depthclip_config):
    estimator = DepthEstimator(
        TorchBackend(_with_size_rule(tiny_depthclip_config, (96, 128), 32), "cpu")
    )
    with pytest.raises(ValueError, match="would become a 96x2080 model input, more than 16 "):
        estimator.predict(_image(60, 1300))  # heights change least: 96 x 2080
    assert estimator.predict(_image(60, 80)).depth.shape == (60, 80)


def test_output_attributes_resize_mode_space_and_kind(tiny_moa_config, monkeypatch):
    """Bicubic resizing in inverse depth, then metres (Depth Pro's post-processing); relative
    outputs are never clamped nor inverted."""
    model = build_model(tiny_moa_config)
    backend = TorchBackend(model, "cpu")
    with torch.no_grad():
        pixels = torch.from_numpy(_image(224, 224)).permute(2, 0, 1)[None].float() / 255
        grid = model.eval().forward_grid(pixels).depth
    monkeypatch.setattr(backend, "forward_grid", lambda x: (grid, None))
    backend.output_resize_mode, backend.output_space = "bicubic", "inverse_depth"
    metric = DepthEstimator(backend, warmup=False).predict(_image(48, 64), (0.01, 100.0))
    inverse = torch.nn.functional.interpolate(grid, (48, 64), mode="bicubic", align_corners=False)
    expected = 1.0 / inverse.clamp(1e-4, 1e4)[0, 0].numpy()
    np.testing.assert_allclose(metric.depth, expected.clip(0.01, 100.0), rtol=1e-6)
    backend.output_kind = "relative"
    relative = DepthEstimator(backend, warmup=False).predict(_image(48, 64), (5.0, 6.0))
    np.testing.assert_allclose(relative.depth, inverse[0, 0].numpy(), rtol=1e-6)


def test_depth_prompts_are_refused_by_models_without_one(estimator):
    with pytest.raises(ValueError, match="takes no depth prompt"):
        estimator.predict(_image(48, 64), prompt_depth=np.ones((4, 4), np.float32))
    assert estimator.takes_depth_prompt is False and estimator.output_kind == "metric"
