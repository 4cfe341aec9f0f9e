"""MoA-DepthCLIP: the architecture in docs/methods.md, checked by counts, gradients and values."""

from __future__ import annotations

import pytest
import torch

from moa_depth_ros.models import build_model
from moa_depth_ros.models import moa_depthclip as moa_module

WIDTH, MLP, BLOCKS, PATCH, EMBED = 768, 3072, 12, 32, 512


def _block_params(d: int = WIDTH, mlp: int = MLP) -> int:
    ln = 2 * d
    attn = (d * 3 * d + 3 * d) + (d * d + d)
    return 2 * ln + attn + (d * mlp + mlp) + (mlp * d + d)


def _expected_counts(grid: int = 7) -> tuple[int, int]:
    """Trainable and frozen parameters of the full-size design, from first principles."""
    experts = 4 * ((WIDTH * 64 + 64) + (64 * WIDTH + WIDTH))
    gate = (WIDTH * 128 + 128) + (128 * 4 + 4)
    moa = 4 * (experts + gate)
    film = EMBED * 2 * WIDTH + 2 * WIDTH
    head = 2 * WIDTH + (WIDTH * 129 + 129)  # LayerNorm + Linear(768 → 128 bins + 1)
    trainable = 4 * _block_params() + moa + film + head
    stem = 3 * WIDTH * PATCH * PATCH + WIDTH + (grid * grid + 1) * WIDTH + 2 * WIDTH  # + ln_pre
    unused_head = 2 * WIDTH + WIDTH * EMBED  # ln_post and proj stay frozen in the tower
    frozen = stem + 8 * _block_params() + unused_head
    return trainable, frozen


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return build_model({"type": "moa_depthclip", "clip_pretrained": "none"})


def test_full_size_parameter_counts(full_model):
    trainable = sum(p.numel() for p in full_model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in full_model.parameters() if not p.requires_grad)
    assert (trainable, frozen) == _expected_counts()
    assert trainable == 31_222_161


def test_full_size_forward_values(full_model):
    out = full_model(torch.randn(2, 3, 224, 224))
    assert out.depth.shape == (2, 1, 224, 224)
    assert torch.isfinite(out.depth).all()
    assert out.depth.min() >= 0.1 - 1e-6 and out.depth.max() <= 10.0 + 1e-5
    assert out.confidence.shape == (2, 1, 224, 224)
    assert out.confidence.min() >= 0 and out.confidence.max() <= 1
    assert out.bin_logits.shape == (2, 128, 7, 7)
    centers = full_model.bin_centers
    assert centers.numel() == 128
    assert torch.allclose(centers[[0, -1]], torch.tensor([0.1, 10.0]))
    ratios = centers[1:] / centers[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))  # log-spaced


def test_only_intended_parameters_get_gradients(full_model):
    full_model.zero_grad(set_to_none=True)
    full_model(torch.randn(2, 3, 224, 224)).depth.mean().backward()
    trainable_prefixes = (
        "adapters.",
        "film.",
        "head.",
        *(f"tower.visual.transformer.resblocks.{i}." for i in (8, 9, 10, 11)),
    )
    for name, param in full_model.named_parameters():
        should_train = name.startswith(trainable_prefixes)
        assert param.requires_grad == should_train, name
        if should_train:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name
    # the head and adapters actually receive signal
    assert full_model.head.proj.weight.grad.abs().sum() > 0
    assert full_model.adapters["2"].gate[0].weight.grad.abs().sum() > 0
    full_model.zero_grad(set_to_none=True)


def test_parameter_groups_split_backbone_and_new_modules(full_model):
    groups = full_model.trainable_parameter_groups()
    n_new = sum(p.numel() for p in groups["new_modules"])
    n_backbone = sum(p.numel() for p in groups["backbone_blocks"])
    assert n_backbone == 4 * _block_params()
    assert n_new + n_backbone == _expected_counts()[0]


def test_gates_sum_to_one_per_token(tiny_moa_config):
    model = build_model(tiny_moa_config)
    tokens = torch.randn(3, 50, model.tower.width)
    gates = model.adapters["5"].gate_weights(tokens)
    assert gates.shape == (3, 50, 4)
    assert torch.allclose(gates.sum(-1), torch.ones(3, 50), atol=1e-6)
    assert (gates > 0).all()


def test_film_starts_as_identity(tiny_moa_config):
    model = build_model(tiny_moa_config)
    tokens = torch.randn(2, 49, model.tower.width)
    context = model.scene_context.expand(2, -1)
    assert model.scene_context.norm() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(model.film(tokens, context), tokens)


def test_context_vector_computed_once_not_per_forward(tiny_moa_config, monkeypatch):
    calls = []
    real = moa_module.encode_prompts
    monkeypatch.setattr(
        moa_module, "encode_prompts", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    model = build_model(tiny_moa_config)
    assert len(calls) == 1
    before = model.scene_context.clone()
    for _ in range(3):
        model(torch.randn(1, 3, 224, 224))
    assert len(calls) == 1
    assert torch.equal(model.scene_context, before)
    assert "scene_context" in model.state_dict()
    # The text tower is gone: nothing from it is kept in the model.
    assert not any(
        k.startswith(("token_embedding", "transformer.", "ln_final")) for k in model.state_dict()
    )


def test_convex_upsampling_option(tiny_moa_config):
    model = build_model({**tiny_moa_config, "upsample": "convex", "convex_factor": 4})
    out = model(torch.randn(2, 3, 224, 224))
    assert out.depth.shape == (2, 1, 224, 224)
    assert torch.isfinite(out.depth).all()
    assert out.depth.min() >= 0.1 - 1e-5 and out.depth.max() <= 10.0 + 1e-4
    out.depth.mean().backward()
    assert model.upsampler.mask.weight.grad.abs().sum() > 0


def test_output_size_and_image_size_options(tiny_moa_config):
    model = build_model({**tiny_moa_config, "image_size": [256, 320]})
    assert model.preprocessing.input_size == (256, 320)
    assert model.tower.visual.positional_embedding.shape[0] == 8 * 10 + 1
    out = model(torch.randn(1, 3, 256, 320), output_size=(480, 640))
    assert out.depth.shape == (1, 1, 480, 640)
    assert out.bin_logits.shape == (1, 32, 8, 10)


def test_load_balance_regularizer_optional(tiny_moa_config):
    x = torch.randn(1, 3, 224, 224)
    assert build_model(tiny_moa_config)(x).aux_loss is None
    aux = build_model({**tiny_moa_config, "load_balance_weight": 0.1})(x).aux_loss
    assert aux is not None and aux.item() >= 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"num_bins": 1}, "num_bins"),
        ({"upsample": "nearest"}, "upsample"),
        ({"image_size": 250}, "image_size"),
        ({"moa_blocks": [2, 40]}, "moa_blocks"),
        ({"max_depth": 0.05}, "max_depth"),
        ({"clip_pretrained": "/no/such/weights.pt"}, "clip_pretrained"),
        ({"context_prompts": []}, "context_prompts"),
        ({"type": "unknown"}, "type"),
    ],
)
def test_bad_config_names_the_key(tiny_moa_config, override, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        build_model({**tiny_moa_config, **override})


def test_local_weights_file_is_loaded_and_positional_embedding_resized(tmp_path, tiny_moa_config):
    import open_clip

    source = open_clip.create_model("ViT-T-32-test")
    weights = tmp_path / "clip_weights.pt"
    torch.save(source.state_dict(), weights)
    model = build_model({**tiny_moa_config, "clip_pretrained": str(weights), "image_size": 288})
    loaded = model.tower.visual
    assert torch.equal(loaded.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(
        loaded.transformer.resblocks[3].mlp.c_fc.weight,
        source.visual.transformer.resblocks[3].mlp.c_fc.weight,
    )
    assert loaded.positional_embedding.shape == (9 * 9 + 1, source.visual.transformer.width)
    assert torch.equal(loaded.positional_embedding[0], source.visual.positional_embedding[0])


def test_openai_torchscript_weights_file_is_accepted(tmp_path, tiny_moa_config):
    """OpenAI's original ViT-B-32.pt is a TorchScript archive; a tiny one made here loads."""
    import warnings

    import open_clip

    source = open_clip.create_model("ViT-T-32-test").eval()
    inputs = (torch.randn(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(source, inputs, check_trace=False, strict=False)
    weights = tmp_path / "ViT-T-32-test.pt"
    traced.save(str(weights))
    with pytest.raises(RuntimeError, match="TorchScript archives"):
        torch.load(weights, weights_only=True)  # what open_clip alone runs into
    model = build_model({**tiny_moa_config, "clip_pretrained": str(weights)})
    loaded = model.tower.visual
    assert torch.equal(loaded.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(loaded.ln_post.weight, source.visual.ln_post.weight)
    # The scene-context vector comes from the archive's text tower too.
    assert model.scene_context.abs().sum() > 0


def test_fused_mixture_equals_the_sum_of_separate_experts(tiny_moa_config):
    moa = build_model(tiny_moa_config).adapters["8"]
    x = torch.randn(2, 50, moa.down.in_features)
    gates = moa.gate_weights(x)
    experts = moa.expert_outputs(x)  # B×L×E×D, each expert computed on its own
    down_w = moa.down.weight.view(moa.num_experts, moa.bottleneck, -1)
    down_b = moa.down.bias.view(moa.num_experts, moa.bottleneck)
    for e in range(moa.num_experts):
        hidden = torch.nn.functional.gelu(x @ down_w[e].T + down_b[e])
        expected = hidden @ moa.up_weight[e] + moa.up_bias[e]
        assert torch.allclose(experts[:, :, e], expected, atol=1e-5)
    expected_out = x + (experts * gates.unsqueeze(-1)).sum(dim=2)
    out, returned_gates = moa(x)
    assert torch.allclose(out, expected_out, atol=1e-5)
    assert torch.equal(returned_gates, gates)
