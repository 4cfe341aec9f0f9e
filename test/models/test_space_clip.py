"""SPACE-CLIP: exact sizes, frozen backbone, shapes, HF CLIP parity, reference checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.models.space_clip import from_reference_state_dict, hf_vision_to_open_clip
from moa_depth_train.cli.import_space_clip import main as import_main

TINY = {
    "type": "space_clip",
    "clip_model": "ViT-T-16-test",
    "clip_pretrained": "none",
    "image_size": 64,
    "decoder_channels": [32, 16, 8, 8],
    "film_hidden": 16,
}


@pytest.mark.slow
def test_full_size_has_the_reference_parameter_counts() -> None:
    model = build_model({"type": "space_clip", "clip_pretrained": "none"})
    groups: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + parameter.numel()
    assert groups == {
        "film_param_generators": 2_366_464,
        "main_path_projections": 369_120,
        "main_decoder_blocks": 5_303_424,
        "structural_path_projections": 344_512,
        "structural_decoder_blocks": 3_274_944,
        "depth_prediction_head": 4_785,
        "aux_depth_heads": 387_747,
    }
    assert sum(groups.values()) == 12_050_996
    assert sum(p.numel() for p in model.parameters()) == 97_850_420
    decoder_keys = [k for k in model.state_dict() if not k.startswith("tower.")]
    assert len(decoder_keys) == 222  # 144 parameters + 78 BatchNorm buffers, as the reference
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), output_size=(480, 640))
    assert out.depth.shape == (1, 1, 480, 640) and (out.depth >= 0).all()
    assert out.confidence is None and out.aux_depths is None  # aux heads only while training


def test_backbone_is_frozen_and_aux_heads_train() -> None:
    model = build_model(TINY).train()
    assert not model.tower.training  # frozen tower stays in eval mode
    out = model(torch.randn(2, 3, 64, 64), output_size=(48, 64))
    assert out.depth.shape == (2, 1, 48, 64)
    assert [a.shape for a in out.aux_depths] == [(2, 1, 48, 64)] * 3
    (out.depth.mean() + sum(a.mean() for a in out.aux_depths)).backward()
    assert all(p.grad is None for p in model.tower.parameters())
    assert all(p.grad is not None for p in model.main_decoder_blocks.parameters())


def _hf_tiny():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=12, num_attention_heads=2,
        image_size=64, patch_size=16, hidden_act="quick_gelu",
    )  # fmt: skip
    torch.manual_seed(1)
    return CLIPVisionModel(config).eval()


def test_open_clip_tower_reproduces_hf_clip_hidden_states() -> None:
    """The reference runs HF CLIPVisionModel; mapped into our open_clip tower, the same weights
    give the same hidden states and pooler (the taps SPACE-CLIP reads)."""
    hf = _hf_tiny()
    model = build_model(TINY).eval()
    hf_state = hf.state_dict()
    model.tower.visual.load_state_dict(hf_vision_to_open_clip(hf_state), strict=True)
    # transformers 4.x key names (nested in vision_model.) map the same way
    nested = hf_vision_to_open_clip({f"vision_model.{k}": v for k, v in hf_state.items()})
    assert nested.keys() == hf_vision_to_open_clip(hf_state).keys()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = hf(pixel_values=images, output_hidden_states=True)
        hidden, pooler = model.backbone(images)
    assert len(hidden) == len(reference.hidden_states) == 13
    for ours, theirs in zip(hidden, reference.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(pooler, reference.pooler_output, atol=2e-5, rtol=1e-4)


def _reference_state(model) -> dict[str, torch.Tensor]:
    """A state dict as the reference saves it: its decoder names, HF backbone, fresh values."""
    torch.manual_seed(2)
    state = {
        k: (torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v) * 0.1)
        if v.is_floating_point()
        else v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith("tower.")
    }
    for name, value in _hf_tiny().state_dict().items():
        state[f"clip_vision_model.{name}"] = value
    return state


def test_reference_checkpoint_round_trips_to_identical_outputs(tmp_path: Path, capsys) -> None:
    reference = _reference_state(build_model(TINY))
    path = tmp_path / "best_checkpoint.pt"
    torch.save({"model": reference, "epoch": 3}, path)
    direct = build_model(TINY)
    loaded = from_reference_state_dict(direct, reference)
    assert len(loaded["decoder"]) == len([k for k in reference if not k.startswith("clip_")])

    out = tmp_path / "space_clip.safetensors"
    overrides = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("type", "clip_pretrained")]
    assert import_main(["--reference", str(path), "--out", str(out), *overrides]) == 0
    assert "decoder and" in capsys.readouterr().out
    converted, metadata = load_checkpoint(out)
    assert metadata["model_type"] == "space_clip"
    assert converted.preprocessing.resize == "pil"  # as the reference's processor
    assert build_model(TINY).preprocessing.resize == "torch"  # models trained here
    for key, value in reference.items():
        if not key.startswith("clip_vision_model."):
            assert torch.equal(converted.state_dict()[key], value), key
    images = torch.randn(2, 3, 64, 64)
    direct.eval()
    with torch.no_grad():
        expected = direct(images).depth
        assert torch.isfinite(expected).all() and expected.sum() > 0
        assert torch.equal(expected, converted(images).depth)
    # and a second save/load is bit-identical
    again, _ = load_checkpoint(save_checkpoint(converted, tmp_path / "again.safetensors"))
    for key, value in converted.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_a_data_parallel_state_dict_imports_like_the_plain_one(tmp_path: Path) -> None:
    reference = _reference_state(build_model(TINY))
    wrapped = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in reference.items()}}, wrapped)
    out = tmp_path / "from_ddp.safetensors"
    overrides = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("type", "clip_pretrained")]
    assert import_main(["--reference", str(wrapped), "--out", str(out), *overrides]) == 0
    converted, _ = load_checkpoint(out)
    for key, value in reference.items():
        if not key.startswith("clip_vision_model."):
            assert torch.equal(converted.state_dict()[key], value), key


def test_importer_errors_are_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.pt"
    assert import_main(["--reference", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "nope.pt: reference checkpoint not found" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"something.weight": torch.zeros(2)}}, wrong)
    code = import_main(["--reference", str(wrong), "--out", str(tmp_path / "o"),
                        "--clip-pretrained", "none", "--set", "clip_model=ViT-T-16-test",
                        "--set", "image_size=64"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "wrong.pt: not a SPACE-CLIP decoder" in err and len(err.splitlines()) == 1
