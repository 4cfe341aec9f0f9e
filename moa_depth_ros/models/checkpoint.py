"""Self-contained `.safetensors` checkpoints: weights + JSON metadata, loadable offline.

The file holds every tensor inference needs (vision weights, new modules, cached text-derived
buffers such as the scene-context vector) and no text encoder. `__metadata__["moa_depth_ros"]`
is a JSON document: format version, model type and full config, preprocessing, and whatever
training/dataset/eval information the trainer adds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from moa_depth_ros import __version__
from moa_depth_ros.errors import one_line
from moa_depth_ros.models import (
    ZERO_SHOT_MODEL_TYPE,
    DepthModel,
    Preprocessing,
    build_model,
    resolve_model_config,
)

FORMAT_VERSION = 1
METADATA_KEY = "moa_depth_ros"
_RESERVED = ("format_version", "model_type", "model_config", "preprocessing", "tensor_sha256")


class CheckpointError(RuntimeError):
    """A checkpoint could not be used; the message is one line naming the file and the problem."""


class LoadedCheckpoint(NamedTuple):
    model: DepthModel
    metadata: dict[str, Any]


def _code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def save_checkpoint(
    model: DepthModel, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `model` and `metadata` (training, dataset, eval_metrics, ...) to one file."""
    path = Path(path)
    extra = dict(metadata or {})
    clash = [key for key in _RESERVED if key in extra]
    if clash:
        raise ValueError(f"metadata key '{clash[0]}' is reserved for the checkpoint format")
    document = {
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "model_config": model.config,
        "preprocessing": model.preprocessing.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": _code_version(),
        **extra,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    document["tensor_sha256"] = tensor_digest(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(document)})
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: what a flipped
    byte anywhere in the data changes (safetensors itself checks only the header)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(
            tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON metadata (validates the file and its format version)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt: {one_line(err)})"
        ) from err
    if raw is None:
        raise CheckpointError(
            f"{path}: no '{METADATA_KEY}' metadata (not a moa_depth_ros checkpoint)"
        )
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({err})") from err
    except RecursionError as err:
        raise CheckpointError(f"{path}: metadata is nested too deeply to be a checkpoint") from err
    if not isinstance(document, dict):
        raise CheckpointError(
            f"{path}: metadata must be a JSON object, got {type(document).__name__}"
        )
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    if not isinstance(document.get("model_config"), dict):
        raise CheckpointError(f"{path}: metadata has no model_config object")
    return document


#: safetensors dtype names of the torch dtypes a model can hold.
_SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


def model_of(path: Path, document: dict[str, Any]) -> DepthModel:
    """The network a checkpoint's metadata (``read_metadata``) describes, without weights, as
    loading builds it before it reads the tensors; CheckpointError naming the file."""
    try:
        return build_model(_config_as_written(document), load_pretrained=False)
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: invalid model config ({one_line(err)})") from err


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> LoadedCheckpoint:
    """Build the model from the file's config and load its tensors; no network access.

    Every tensor must have the model's shape and dtype and hold finite values; with ``verify``
    (default) the tensors' SHA-256 must match the one written into the metadata (measured 0.23 s
    for the 363 MB of ViT-B/32 MoA-DepthCLIP; ``verify=False`` skips it for trusted files).
    Files written before the digest existed load without that check.
    """
    path = Path(path)
    document = read_metadata(path)
    model = model_of(path, document)

    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            stored_keys = set(handle.keys())
            missing = sorted(set(expected) - stored_keys)
            if missing:
                raise CheckpointError(
                    f"{path}: missing tensor '{missing[0]}' ({len(missing)} missing)"
                )
            unexpected = sorted(stored_keys - set(expected))
            if unexpected:
                raise CheckpointError(
                    f"{path}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} unexpected)"
                )
            tensors = {}
            for key, target in expected.items():
                tensor_slice = handle.get_slice(key)
                shape = list(tensor_slice.get_shape())
                if shape != list(target.shape):
                    raise CheckpointError(
                        f"{path}: tensor '{key}' has shape {shape} but the model config "
                        f"expects {list(target.shape)}"
                    )
                dtype, wanted = tensor_slice.get_dtype(), _SAFETENSORS_DTYPES.get(target.dtype)
                if dtype != wanted:
                    raise CheckpointError(
                        f"{path}: tensor '{key}' is {dtype} but the model holds {wanted}"
                    )
                tensors[key] = handle.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"{path}: could not read tensors (truncated or corrupt: {one_line(err)})"
        ) from err
    expected_digest = document.get("tensor_sha256")
    if verify and expected_digest is not None and tensor_digest(tensors) != expected_digest:
        raise CheckpointError(
            f"{path}: tensor data do not match the SHA-256 in its metadata (corrupt file)"
        )
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor '{key}' holds NaN or infinite values")
    # The preprocessing the file was trained with must be the one its config builds now;
    # otherwise the model would silently see differently sized or normalized images.
    stored = document.get("preprocessing")
    # Through the dataclass: keys added since (resize) take the value older files meant; what
    # it cannot read is compared as it is, and reported below.
    with contextlib.suppress(TypeError, KeyError, ValueError):
        stored = Preprocessing.from_dict(stored).to_dict()
    built = model.preprocessing.to_dict()
    if json.loads(json.dumps(stored)) != json.loads(json.dumps(built)):
        raise CheckpointError(
            f"{path}: stored preprocessing {stored} differs from what its model config builds "
            f"({built})"
        )
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return LoadedCheckpoint(model, document)


def _config_as_written(document: dict[str, Any]) -> dict[str, Any]:
    """The stored model config; files from before a model type had the ``resize`` key resized
    with torch, whatever that type's default is now."""
    config = document["model_config"]
    stored = document.get("preprocessing")
    if not isinstance(config, dict) or "resize" in config or not isinstance(stored, dict):
        return config
    written = {**config, "resize": stored.get("resize", "torch")}
    try:
        resolve_model_config(written)
    except ValueError:  # this model type has no resize key
        return config
    return written


def load_or_zero_shot(
    checkpoint: str | Path | None, clip_pretrained: str = "openai", verify: bool = True
) -> LoadedCheckpoint:
    """The checkpoint file, or zero-shot DepthCLIP with ``clip_pretrained`` weights when it is
    empty (metadata then empty): the one policy the node and every CLI share."""
    if checkpoint:
        return load_checkpoint(checkpoint, verify=verify)
    model = build_model({"type": ZERO_SHOT_MODEL_TYPE, "clip_pretrained": clip_pretrained})
    return LoadedCheckpoint(model.eval(), {})
