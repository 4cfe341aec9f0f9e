"""``--init CKPT``: start a run from a checkpoint's weights (fine-tuning).

The checkpoint must describe the run's network; ``check_init`` says so from its metadata alone,
before any data is decoded or model built, and ``load_init_weights`` copies the weights.
Checkpoints are safetensors: loading one runs no code from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.models import resolve_model_config
from moa_depth_ros.models.checkpoint import CheckpointError, load_checkpoint, read_metadata

__all__ = ["INIT_FREE_KEYS", "check_init", "load_init_weights"]

#: Model config keys that say where the weights came from or which of them train, not what
#: the network computes: they may differ between an --init checkpoint and the run's config.
INIT_FREE_KEYS = frozenset({"clip_pretrained", "trainable_blocks", "load_balance_weight"})


def _require_same_network(path: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    def comparable(config: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({k: v for k, v in config.items() if k not in INIT_FREE_KEYS}))

    theirs, ours = comparable(theirs), comparable(ours)
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        shown = "; ".join(f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in differ[:4])
        raise CheckpointError(
            f"--init {path}: the checkpoint's model config differs from model.* ({shown}; "
            "checkpoint vs config); train with the checkpoint's model settings"
        )


def check_init(model_config: dict[str, Any], path: str | Path) -> None:
    """CheckpointError unless ``path`` is a readable checkpoint of the network ``model_config``
    describes; from its metadata only, so a mistake shows before any data is decoded."""
    path = Path(path)
    document = read_metadata(path)
    try:
        theirs = resolve_model_config(document["model_config"])
    except ValueError as err:
        raise CheckpointError(f"--init {path}: invalid model config ({one_line(err)})") from err
    _require_same_network(path, theirs, resolve_model_config(model_config))


def load_init_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Copy the weights of checkpoint ``path`` into ``model``, whose config must describe the
    same network; ``{"path", "sha256"}`` of the file.

    Raises:
        CheckpointError: an unreadable checkpoint or one of another model config.
    """
    path = Path(path)
    loaded = load_checkpoint(path, device="cpu")
    _require_same_network(path, loaded.model.config, model.config)
    model.load_state_dict(loaded.model.state_dict())
    return {"path": str(path), "sha256": file_sha256(path)}
