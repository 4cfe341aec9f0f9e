"""Preprocessing: Pillow resizing as the reference processors, and files written before it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from moa_depth_ros.models import Preprocessing, build_model, preprocess
from moa_depth_ros.models.checkpoint import METADATA_KEY, load_checkpoint, save_checkpoint
from moa_depth_ros.models.depthblip2 import LN_VISION_EPS
from moa_depth_ros.models.preprocessing import CLIP_MEAN, CLIP_STD

TINY_BLIP = {"type": "depthblip2", "size": "tiny"}


def _camera_like(seed: int = 0) -> np.ndarray:
    """A 480×640 frame with edges and texture (where resampling kernels differ)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    base = (x // 40 + y // 30) % 2 * 160 + rng.integers(0, 90, (480, 640))
    return np.stack([base, np.roll(base, 7, 1), 255 - base], -1).clip(0, 255).astype(np.uint8)


def _unnormalized(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255.0)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_pil_resize_is_what_pillow_gives(mode: str) -> None:
    rgb = _camera_like()
    spec = Preprocessing((224, 224), CLIP_MEAN, CLIP_STD, mode, "pil")
    got = _unnormalized(preprocess(torch.from_numpy(rgb).permute(2, 0, 1)[None], spec))
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    expected = np.asarray(Image.fromarray(rgb).resize((224, 224), filters[mode]), np.float32)
    assert np.abs(got - expected).max() <= 1e-3  # float rounding of the normalization only
    # torch's antialiased kernel is not Pillow's (beyond Pillow's rounding to whole levels): the
    # reason the mode exists.
    torch_spec = Preprocessing((224, 224), CLIP_MEAN, CLIP_STD, mode, "torch")
    torch_got = _unnormalized(preprocess(torch.from_numpy(rgb).permute(2, 0, 1)[None], torch_spec))
    assert np.abs(torch_got - expected).max() > 0.5


def test_pil_resize_takes_float_batches_and_keeps_same_size_frames() -> None:
    rgb = np.stack([_camera_like(1), _camera_like(2)])
    batch = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    spec = Preprocessing((96, 128), CLIP_MEAN, CLIP_STD, "bicubic", "pil")
    assert torch.equal(preprocess(batch.float(), spec), preprocess(batch, spec))
    one = preprocess(batch[1:], spec)
    assert preprocess(batch, spec).shape == (2, 3, 96, 128)
    assert torch.equal(preprocess(batch, spec)[1:], one)
    same = Preprocessing((480, 640), CLIP_MEAN, CLIP_STD, "bicubic", "pil")
    torch_same = Preprocessing((480, 640), CLIP_MEAN, CLIP_STD, "bicubic", "torch")
    assert torch.equal(preprocess(batch, same), preprocess(batch, torch_same))


def test_unknown_resize_values_name_the_field() -> None:
    expected = "resize must be one of \\('torch', 'pil', 'torchvision'\\)"
    with pytest.raises(ValueError, match=expected):
        Preprocessing((8, 8), CLIP_MEAN, CLIP_STD, "bicubic", "opencv")
    with pytest.raises(ValueError, match="resize_mode must be bilinear or bicubic"):
        Preprocessing((8, 8), CLIP_MEAN, CLIP_STD, "area")
    with pytest.raises(ValueError, match="config key 'resize' of model type 'depthblip2'"):
        build_model({**TINY_BLIP, "resize": "cv2"})


def test_depthblip2_resizes_and_normalizes_its_vision_output_as_the_reference() -> None:
    model = build_model(TINY_BLIP)
    assert model.preprocessing.resize == "pil"
    assert model.vision.post_layernorm.eps == LN_VISION_EPS == 1e-5  # LAVIS ln_vision
    inner = [m.eps for n, m in model.vision.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert inner.count(1e-6) == len(inner) - 1  # the blocks keep the ViT's own 1e-6


def _strip_resize(path: Path, out: Path) -> None:
    """``path`` rewritten as a file from before the ``resize`` key (same tensors)."""
    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    document["model_config"].pop("resize")
    document["preprocessing"].pop("resize")
    save_file(tensors, str(out), metadata={METADATA_KEY: json.dumps(document)})


def test_files_from_before_the_resize_key_load_and_resize_with_torch(tmp_path: Path) -> None:
    """A DepthBLIP-2 trained before now resized with torch: it must keep doing so (its new
    default is pil), and load without a preprocessing mismatch."""
    path = save_checkpoint(build_model(TINY_BLIP).eval(), tmp_path / "new.safetensors")
    old = tmp_path / "old.safetensors"
    _strip_resize(path, old)
    model, _ = load_checkpoint(old)
    assert model.preprocessing.resize == "torch" and model.config["resize"] == "torch"
    assert load_checkpoint(path)[0].preprocessing.resize == "pil"


def test_old_preprocessing_dicts_read_back_equal_and_new_fields_only_when_set() -> None:
    old = {"input_size": [224, 224], "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
           "resize_mode": "bicubic", "resize": "torch"}  # fmt: skip
    spec = Preprocessing.from_dict(old)
    assert json.loads(json.dumps(spec.to_dict())) == old  # what checkpoints compare
    assert spec.size_rule == "fixed" and spec.input_size_for((7, 1000)) == (224, 224)
    ruled = Preprocessing((518, 518), CLIP_MEAN, CLIP_STD, size_rule="keep_aspect",
                          size_target=(518, 518), size_multiple=14)  # fmt: skip
    data = json.loads(json.dumps(ruled.to_dict()))
    assert data["size_rule"] == "keep_aspect" and data["size_target"] == [518, 518]
    assert "pad" not in data and "antialias" not in data  # still at their defaults
    assert Preprocessing.from_dict(data) == ruled
    with pytest.raises(ValueError, match="size_rule keep_aspect needs size_target"):
        Preprocessing((8, 8), CLIP_MEAN, CLIP_STD, size_rule="keep_aspect")
    with pytest.raises(ValueError, match="size_multiple must be a positive int"):
        Preprocessing((8, 8), CLIP_MEAN, CLIP_STD, size_multiple=0)


def test_size_rules_by_hand() -> None:
    keep = Preprocessing((518, 518), CLIP_MEAN, CLIP_STD, size_rule="keep_aspect",
                         size_target=(518, 518), size_multiple=14)  # fmt: skip
    # 480x640: heights change least (518/480 = 1.079 against 518/640 = 0.809), so the scale is
    # 1.079: 518 x 690.7 → 518 x 686 (49 · 14).
    assert keep.input_size_for((480, 640)) == (518, 686)
    # 720x1280: 0.719 against 0.405 → 518 x 920.9 → 518 x 924.
    assert keep.input_size_for((720, 1280)) == (518, 924)
    # An extreme aspect ratio keeps one multiple on the short side (the processor gives 0).
    assert keep.input_size_for((1, 1000)) == (14, 518)
    floor = Preprocessing((480, 640), CLIP_MEAN, CLIP_STD, size_rule="floor_multiple",
                          size_multiple=32)  # fmt: skip
    assert floor.input_size_for((481, 703)) == (480, 672)
    assert floor.input_size_for((20, 20)) == (32, 32)
    zoe = Preprocessing((384, 512), CLIP_MEAN, CLIP_STD, size_rule="keep_aspect",
                        size_target=(384, 512), size_multiple=32,
                        pad="zoedepth_reflect")  # fmt: skip
    # int(sqrt(480 / 2) · 3) = 46 rows, int(sqrt(640 / 2) · 3) = 53 columns on each side.
    assert zoe.padding_for((480, 640)) == (46, 53)
    assert zoe.input_size_for((480, 640)) == (384, 512)  # 572 x 746 → scale 0.671 or 0.686


def test_zoedepth_padding_is_a_reflection_before_the_resize() -> None:
    spec = Preprocessing((8, 8), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size_rule="keep_aspect",
                         size_target=(18, 18), size_multiple=1, pad="zoedepth_reflect",
                         antialias=False, align_corners=True)  # fmt: skip
    rgb = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(1, 3, 8, 8)
    assert spec.padding_for((8, 8)) == (6, 6)  # int(sqrt(4) · 3)
    out = preprocess(rgb, spec)  # 20x20 padded, resized to 18x18
    assert out.shape == (1, 3, 18, 18)
    padded = torch.nn.functional.pad(rgb.float() / 255.0, (6, 6, 6, 6), mode="reflect")
    expected = torch.nn.functional.interpolate(padded, (18, 18), mode="bilinear",
                                               align_corners=True)  # fmt: skip
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="4x9 image is too small for its reflect padding"):
        preprocess(torch.zeros(1, 3, 4, 9, dtype=torch.uint8), spec)  # int(sqrt(2) · 3) = 4
