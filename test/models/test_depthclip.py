"""Zero-shot DepthCLIP: the reference pipeline's shapes, range and symmetry."""

from __future__ import annotations

import pytest
import torch

from moa_depth_ros.models import build_model
from moa_depth_ros.models.depthclip import DEPTH_BINS, DEPTH_CLASSES


@pytest.fixture(scope="module")
def rn50():
    torch.manual_seed(0)
    return build_model({"type": "depthclip", "clip_pretrained": "none", "image_size": [224, 288]})


def test_rn50_depth_inside_bin_range(rn50):
    out = rn50(torch.randn(2, 3, 224, 288))
    assert out.depth.shape == (2, 1, 224, 288)
    assert torch.isfinite(out.depth).all()
    assert out.depth.min() >= 1.0 - 1e-5 and out.depth.max() <= 3.0 + 1e-5
    assert out.bin_logits.shape == (2, 7, 7, 9)  # stride-32 layer4 grid, 7 classes
    assert out.confidence.min() >= 0 and out.confidence.max() <= 1


def test_rn50_reference_details(rn50):
    assert rn50.preprocessing.mean == (0.485, 0.456, 0.406)  # ImageNet, not CLIP
    assert rn50.config["temperature"] == 0.1
    assert rn50.bins.tolist() == pytest.approx(DEPTH_BINS)
    assert rn50.config["classes"] == DEPTH_CLASSES
    assert rn50.text_bank.shape == (1024, 7)
    assert torch.allclose(rn50.text_bank.norm(dim=0), torch.ones(7), atol=1e-5)
    feats = rn50.image_features(torch.randn(1, 3, 224, 288))
    assert feats.shape == (1, 1024, 7, 9)  # every second of 2048 normalized channels
    assert rn50.visual.attnpool is None
    assert not any(p.requires_grad for p in rn50.parameters())


def test_flip_tta_makes_output_mirror_symmetric(rn50):
    image = torch.randn(1, 3, 224, 288)
    depth = rn50(image).depth
    depth_of_mirror = rn50(image.flip(-1)).depth
    assert torch.allclose(depth_of_mirror, depth.flip(-1), atol=1e-5)


def test_vit_variant_depth_inside_bin_range():
    model = build_model(
        {
            "type": "depthclip",
            "clip_model": "ViT-B-32-quickgelu",
            "clip_pretrained": "none",
            "image_size": 224,
        }
    )
    out = model(torch.randn(1, 3, 224, 224))
    assert out.bin_logits.shape == (1, 7, 7, 7)
    assert model.text_bank.shape == (512, 7)
    assert out.depth.min() >= 1.0 - 1e-5 and out.depth.max() <= 3.0 + 1e-5


def test_bins_and_classes_must_match(tiny_depthclip_config):
    with pytest.raises(ValueError, match="'bins'"):
        build_model({**tiny_depthclip_config, "bins": [1.0, 2.0]})
