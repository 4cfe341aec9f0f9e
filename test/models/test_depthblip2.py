"""DepthBLIP-2 on tiny configs (and full-size counts on the meta device; no weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.models.depthblip2 import (
    CLASS_TOKENS,
    build_hf_modules,
    group_features,
    prompt_token_ids,
    resolve,
)

TINY = {"type": "depthblip2", "size": "tiny"}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", ["instructblip", "blip2"])
def test_full_size_parameter_counts_on_meta(variant) -> None:
    modules = build_hf_modules(resolve({"variant": variant}), on_meta=True)
    assert next(modules["vision"].parameters()).is_meta
    assert _count(modules["vision"]) == 985_952_256  # EVA ViT-g/14, 39 layers, 1408 wide
    if variant == "instructblip":
        assert _count(modules["qformer"]) == 185_660_160
    else:  # BLIP-2 keeps the text embeddings outside its Q-Former
        assert _count(modules["qformer"]) + _count(modules["text_embeddings"]) > 185_000_000
    assert resolve({"variant": variant})["feature_grid"] == [3, 16, 16]
    assert resolve({"variant": variant})["image_size"] == 224


def test_prompt_ids_are_the_bert_uncased_wordpieces() -> None:
    ids, mask = prompt_token_ids(["giant", "not in distance", "far"])
    assert ids[0].tolist() == [101, 2023, 4874, 2003, 5016, 102, 0, 0]
    assert ids[1].tolist() == [101, 2023, 4874, 2003, 2025, 1999, 3292, 102]
    assert mask.sum(1).tolist() == [6, 8, 6]
    assert set(CLASS_TOKENS) == {
        "giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen",
    }  # fmt: skip


def test_bert_tokenizer_agrees_with_the_fixed_ids(tmp_path) -> None:
    """A BERT tokenizer over a vocabulary holding those ids tokenizes the prompts to them."""
    from transformers import BertTokenizer

    needed = {101: "[CLS]", 102: "[SEP]", 0: "[PAD]", 100: "[UNK]", 2023: "this", 4874: "object",
              2003: "is", 5016: "giant", 5186: "extremely", 2485: "close", 2025: "not", 1999: "in",
              3292: "distance", 1037: "a", 2210: "little", 6556: "remote", 2521: "far",
              16100: "unseen"}  # fmt: skip
    vocab = [needed.get(i, f"[unused{i}]") for i in range(16101)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(tmp_path / "vocab.txt"))  # 5.x: vocab=, not vocab_file=
    classes = list(CLASS_TOKENS)
    ours, _ = prompt_token_ids(classes)
    for k, name in enumerate(classes):
        theirs = tokenizer(f"this object is {name}")["input_ids"]
        assert ours[k, : len(theirs)].tolist() == theirs


def test_grouping_v2_contiguous_and_v1_interleaved() -> None:
    grid = (3, 2, 2)
    features = torch.zeros(1, 1, 12)
    features[0, 0, 4 + 3] = 5.0  # v2: group 1, row 1, col 1 (index 4·g + 2·h + w)
    v2 = group_features(features, grid, "v2")
    assert v2[0, 0].tolist() == [[0.0, 0.0], [0.0, 5.0]]
    # v1: index 6·h + 3·w + g → 7 = h 1, w 0, g 1
    v1 = group_features(features, grid, "v1")
    assert v1[0, 0].tolist() == [[0.0, 0.0], [5.0, 0.0]]
    ramp = torch.arange(12.0).view(1, 1, 12)
    assert group_features(ramp, grid, "v2")[0, 0].tolist() == [[8.0, 9.0], [10.0, 11.0]]
    assert group_features(ramp, grid, "v1")[0, 0].tolist() == [[2.0, 5.0], [8.0, 11.0]]


@pytest.mark.parametrize("variant", ["instructblip", "blip2"])
def test_tiny_forward_shapes_probabilities_and_depth_range(variant) -> None:
    torch.manual_seed(0)
    model = build_model({**TINY, "variant": variant, "temperature": 0.01}).eval()
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out = model(images, output_size=(48, 64))
        probs = model._probabilities(images)
    assert out.depth.shape == out.confidence.shape == (2, 1, 48, 64)
    assert probs.shape == (2, 7, 4, 4)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 4, 4))
    assert (out.depth >= 1.0).all() and (out.depth <= 3.5).all()
    assert out.depth.std() > 1e-3  # a sharp temperature spreads the depths: real features


def test_batched_prompts_equal_one_call_per_prompt() -> None:
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        batched = model.class_features(images)
        tokens = model.vision(pixel_values=images).last_hidden_state
        for k in range(model.prompt_ids.shape[0]):
            length = int(model.prompt_mask[k].sum())
            ids = model.prompt_ids[k : k + 1, :length].expand(2, -1)
            queries = model.query_tokens.expand(2, -1, -1)
            mask = torch.ones(2, 32 + length, dtype=torch.long)
            single = model.qformer(
                input_ids=ids, attention_mask=mask, query_embeds=queries,
                encoder_hidden_states=tokens,
            ).last_hidden_state[:, :32].mean(1)  # fmt: skip
            torch.testing.assert_close(batched[:, k], single, atol=2e-6, rtol=1e-5)


def test_learned_bins_formula_and_only_the_mlp_learns() -> None:
    model = build_model({**TINY, "learned_bins": True}).eval()
    s = model.bin_mlp.mlp(model.initial_bins[None])[0]
    torch.testing.assert_close(model.bins(), 1.0 + s**2 * 2.5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("bin_mlp.") for n in trainable)
    out = model(torch.randn(1, 3, 56, 56))
    out.depth.mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert all(model.get_parameter(n).grad is not None for n in trainable)


def test_a_few_learned_bin_steps_lower_the_loss() -> None:
    from moa_depth_train.losses import build_loss

    torch.manual_seed(2)
    model = build_model({**TINY, "learned_bins": True, "temperature": 0.05}).train()
    images = torch.randn(4, 3, 56, 56)
    gt = torch.full((4, 1, 48, 64), 3.2)
    loss_fn = build_loss({"type": "mae_rmse"}, None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(images, output_size=(48, 64)), gt)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_checkpoint_is_self_contained_and_round_trips(tmp_path) -> None:
    model = build_model({**TINY, "learned_bins": True}).eval()
    path = save_checkpoint(model, tmp_path / "depthblip2.safetensors")
    loaded, metadata = load_checkpoint(path)
    assert metadata["model_config"]["qformer_config"]["hidden_size"] == 48
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert "query_tokens" in loaded.state_dict() and "prompt_ids" in loaded.state_dict()
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(model(images).depth, loaded(images).depth)


def _hf_directory(tmp_path: Path, model) -> Path:
    """A local HF-style InstructBLIP directory: config.json, two shards and an index; the
    language model's shard is garbage, so opening it would fail."""
    directory = tmp_path / "instructblip-tiny"
    directory.mkdir()
    config = {
        "vision_config": model.config["vision_config"],
        "qformer_config": model.config["qformer_config"],
        "text_config": {"model_type": "llama"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    state = model.state_dict()
    ours = {f"vision_model.{k[7:]}": v for k, v in state.items() if k.startswith("vision.")}
    ours.update({f"qformer.{k[8:]}": v for k, v in state.items() if k.startswith("qformer.")})
    ours["query_tokens"] = state["query_tokens"]
    save_file(
        {k: v.contiguous() for k, v in ours.items()},
        str(directory / "model-00001-of-00002.safetensors"),
    )
    (directory / "model-00002-of-00002.safetensors").write_bytes(b"not read: the 7B language model")
    weight_map = dict.fromkeys(ours, "model-00001-of-00002.safetensors")
    weight_map["language_model.lm_head.weight"] = "model-00002-of-00002.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return directory


def test_weights_load_from_a_local_hf_directory_without_the_language_model(tmp_path) -> None:
    torch.manual_seed(3)
    source = build_model(TINY).eval()
    directory = _hf_directory(tmp_path, source)
    loaded = build_model({"type": "depthblip2", "pretrained": str(directory)}).eval()
    assert loaded.config["vision_config"]["hidden_size"] == 32  # architecture from config.json
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(source(images).depth, loaded(images).depth)
    (directory / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(Exception, match="model-00001-of-00002"):
        build_model({"type": "depthblip2", "pretrained": str(directory)})


def test_checkpoint_cli_builds_a_self_contained_file(tmp_path, capsys) -> None:
    from moa_depth_ros.cli.checkpoint import main

    out = tmp_path / "zero_shot.safetensors"
    assert main(["--type", "depthblip2", "--set", "size=tiny", "--set", "grouping=v1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "depthblip2" in capsys.readouterr().out
    model, metadata = load_checkpoint(out)
    assert metadata["model_config"]["grouping"] == "v1"
    assert main(["--type", "depthblip2", "--set", "grouping=v3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'grouping'" in err and len(err.strip().splitlines()) == 1
