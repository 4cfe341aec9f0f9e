"""Checkpoint round trips and one clear, distinct message per kind of bad file."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def _rewrite_metadata(path, edit) -> None:
    """Rewrite the JSON document inside a safetensors header (keeps the tensors)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    document = json.loads(header["__metadata__"]["moa_depth_ros"])
    edit(document)
    header["__metadata__"]["moa_depth_ros"] = json.dumps(document)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + header_len :])


@pytest.mark.parametrize("fixture", ["tiny_moa_config", "tiny_depthclip_config"])
def test_round_trip_is_bit_identical(tmp_path, fixture, request):
    config = request.getfixturevalue(fixture)
    model = build_model(config).eval()
    path = save_checkpoint(model, tmp_path / "model.safetensors", {"training": {"steps": 3}})
    loaded, metadata = load_checkpoint(path, device="cpu")
    size = model.preprocessing.input_size
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        a, b = model(images), loaded(images)
    assert torch.equal(a.depth, b.depth)
    assert torch.equal(a.confidence, b.confidence)
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["model_type"] == config["type"]
    assert metadata["model_config"] == model.config
    assert metadata["preprocessing"]["input_size"] == list(size)
    assert metadata["training"] == {"steps": 3}
    assert "code_version" in metadata and "created" in metadata


def test_loading_needs_no_network_and_no_text_encoder(tmp_path, tiny_moa_config, monkeypatch):
    # The config says 'openai', but weights come from the file: open_clip must not fetch anything.
    model = build_model({**tiny_moa_config, "clip_pretrained": "openai"}, load_pretrained=False)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    import open_clip

    real_create = open_clip.create_model

    def no_download(name, pretrained=None, **kwargs):
        assert pretrained is None, "checkpoint loading asked open_clip for pretrained weights"
        return real_create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", no_download)
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.scene_context, model.scene_context)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="absent.safetensors: checkpoint file not found"):
        load_checkpoint(path)


def test_truncated_file(tmp_path, tiny_moa_config):
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: .*truncated or corrupt") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_garbage_header(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"garbage.safetensors: not a readable safetensors"):
        load_checkpoint(path)


def test_wrong_format_version(tmp_path, tiny_moa_config):
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "v.safetensors")
    _rewrite_metadata(path, lambda doc: doc.update(format_version=99))
    with pytest.raises(CheckpointError, match=r"v.safetensors: checkpoint format version 99"):
        load_checkpoint(path)


def test_mismatched_shapes(tmp_path, tiny_moa_config):
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "s.safetensors")
    _rewrite_metadata(path, lambda doc: doc["model_config"].update(num_bins=64))
    with pytest.raises(
        CheckpointError, match=r"s.safetensors: tensor 'head\.\S+' has shape \[\d+.*expects"
    ):
        load_checkpoint(path)


def test_not_a_moa_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="other.safetensors: no 'moa_depth_ros' metadata"):
        read_metadata(path)


def test_reserved_metadata_keys_rejected(tmp_path, tiny_moa_config):
    with pytest.raises(ValueError, match="format_version"):
        save_checkpoint(
            build_model(tiny_moa_config), tmp_path / "x.safetensors", {"format_version": 2}
        )


def test_stored_preprocessing_is_checked_against_the_config(tmp_path, tiny_moa_config):
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "m.safetensors")
    load_checkpoint(path)  # unchanged: loads

    def other_mean(document):
        document["preprocessing"]["mean"] = [0.5, 0.5, 0.5]

    _rewrite_metadata(path, other_mean)
    with pytest.raises(CheckpointError, match="m.safetensors: stored preprocessing .* differs"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("dtype_name", "dtype"),
    [("F16", torch.float16), ("I64", torch.int64), ("BOOL", torch.bool)],
)
def test_wrong_tensor_dtypes_are_refused(tmp_path, tiny_moa_config, dtype_name, dtype):
    """A tensor stored as fp16 / int64 / bool (bool would turn the weights into 0/1)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    key = "head.proj.weight"
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=f"'{key}' is {dtype_name} but the model holds F32"):
        load_checkpoint(path)


def test_nan_weights_and_flipped_bytes_are_refused(tmp_path, tiny_moa_config):
    model = build_model(tiny_moa_config)
    with torch.no_grad():
        model.head.proj.weight[0, 0] = float("nan")
    path = save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="'head.proj.weight' holds NaN or infinite values"):
        load_checkpoint(path)

    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "flipped.safetensors")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1024] = bytes(b ^ 0xFF for b in data[middle : middle + 1024])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the SHA-256 in its metadata"):
        load_checkpoint(path)


def test_directories_and_bad_metadata_types_are_one_line(tmp_path, tiny_moa_config):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="dir.safetensors: is a directory, not a checkpoint"):
        load_checkpoint(tmp_path / "dir.safetensors")
    path = save_checkpoint(build_model(tiny_moa_config), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    for document, reason in (([1, 2, 3], "must be a JSON object, got list"),
                             ("[" * 100_000 + "]" * 100_000, "nested too deeply")):  # fmt: skip
        header = json.loads(raw[8 : 8 + header_len])
        header["__metadata__"]["moa_depth_ros"] = (
            document if isinstance(document, str) else json.dumps(document)
        )
        new_header = json.dumps(header).encode()
        new_header += b" " * (-len(new_header) % 8)
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + header_len :])
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(bad)
        assert reason in str(error.value) and "bad.safetensors" in str(error.value)
        assert "\n" not in str(error.value)
