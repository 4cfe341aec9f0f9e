"""Convert a checkpoint trained with the SPACE-CLIP reference code into a node checkpoint
(the command is ``moa-depth-import-space-clip``, ``moa_depth_train.cli.import_space_clip``).

The reference saves ``{"model": state_dict, ...}`` (the whole model, HF CLIP backbone
included) or a decoder-only state dict; both load without executing code from the file
(``torch.load(weights_only=True)``, or safetensors); a ``module.`` prefix ((Distributed)
DataParallel) is stripped as the reference loader does. Decoder tensors keep their reference
names; HF backbone tensors are mapped to open_clip. The checkpoint written resizes with Pillow
(``resize: pil``), as the reference's processor. Without backbone tensors in the file the backbone
comes from ``--clip-pretrained`` (OpenAI weights, or a local file).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from moa_depth_ros.errors import one_line
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint
from moa_depth_ros.models.space_clip import from_reference_state_dict
from moa_depth_ros.options import model_config_with

DATA_PARALLEL_PREFIX = "module."


def read_reference(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a reference checkpoint (.pt/.pth/.bin or .safetensors)."""
    if not path.is_file():
        raise ValueError(f"{path}: reference checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors errors alike: one line
        raise ValueError(f"{path}: not a readable checkpoint ({one_line(err)})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict of tensors")
    # A model saved while wrapped in (Distributed)DataParallel, as the reference loader allows.
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return state


def convert(
    reference: Path, out: Path, clip_pretrained: str = "openai", overrides: list[str] = ()
) -> dict[str, int]:
    state = read_reference(reference)
    has_backbone = any(k.startswith("clip_vision_model.") for k in state)
    # The reference's processor resizes with Pillow: the imported model sees the same pixels.
    base = {"type": "space_clip", "clip_pretrained": clip_pretrained, "resize": "pil"}
    config = model_config_with(base, overrides)
    model = build_model(config, load_pretrained=not has_backbone)
    try:
        loaded = from_reference_state_dict(model, state)
    except ValueError as err:
        raise ValueError(f"{reference}: {err}") from err
    save_checkpoint(model.eval(), out, {"imported_from": {"reference": str(reference)}})
    return {name: len(keys) for name, keys in loaded.items()}
