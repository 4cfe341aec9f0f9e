"""Thin wrappers over open_clip: model creation, and a ViT vision tower that taps block outputs.

Facts from open_clip's own code (3.x) that shape this file:
- `VisionTransformer._embeds` does conv1 → [CLS; patches] + positional embedding → patch dropout
  → ln_pre; the transformer runs batch-first unless `transformer.batch_first` is False.
- OpenAI weights were trained with QuickGELU: use the `*-quickgelu` model names with them.
- `create_model(force_image_size=...)` builds the positional embedding for that size and
  `load_checkpoint` resizes pretrained positional embeddings (bicubic) to it.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import open_clip
import torch
from open_clip.model import resize_pos_embed
from torch import nn

#: Environment variable naming more open_clip model-config folders (os.pathsep-separated),
#: e.g. the tests' tiny architectures or a user's own.
CONFIG_DIRS_ENV = "MOA_DEPTH_OPEN_CLIP_CONFIGS"
# The shipped tiny ViT-T-16-demo, so the CPU demo trains in minutes.
open_clip.add_model_config(Path(__file__).parent / "open_clip_configs")
for _folder in filter(None, os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep)):
    open_clip.add_model_config(_folder)


def check_pretrained(value: object) -> bool:
    """`clip_pretrained` is 'none', an open_clip tag such as 'openai', or an existing file."""
    if not isinstance(value, str) or not value:
        return False
    looks_like_path = os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))
    return not looks_like_path or Path(value).is_file()


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns 'initialized randomly' even when a checkpoint supplies every weight."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_clip(
    model_name: str,
    pretrained: str,
    image_size: tuple[int, int] | None = None,
    weights_follow: bool = False,
) -> nn.Module:
    """An open_clip CLIP model; `pretrained` = 'none' (random init), a tag, or a local file.

    `weights_follow`: the caller loads every tensor afterwards (a checkpoint), so open_clip's
    random-initialization warning would mislead and is dropped.
    """
    weights = None if pretrained == "none" else pretrained
    kwargs = {"force_image_size": image_size} if image_size is not None else {}
    torchscript = weights is not None and is_torchscript_archive(weights)
    quiet = _DropRandomInitWarning()
    root = logging.getLogger()
    if weights_follow or torchscript:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(
            model_name, pretrained=None if torchscript else weights, **kwargs
        )
        if torchscript:
            _load_torchscript_weights(model, Path(weights))
    except Exception as err:  # open_clip raises RuntimeError/HF errors; give one clear line
        hint = (
            "pass a local weights file" if weights and not Path(weights).is_file() else "check it"
        )
        raise RuntimeError(
            f"could not create open_clip model '{model_name}' with pretrained={pretrained!r} "
            f"({type(err).__name__}: {err}); offline machines: {hint}"
        ) from err
    finally:
        root.removeFilter(quiet)
    model.eval()
    return model


def is_torchscript_archive(path: str) -> bool:
    """OpenAI's original ``ViT-B-32.pt`` / ``RN50.pt`` are TorchScript archives (a zip with a
    ``code/`` folder), which ``torch.load(weights_only=True)`` refuses."""
    if not Path(path).is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_torchscript_weights(model: nn.Module, path: Path) -> None:
    """The tensors of an OpenAI TorchScript archive into an open_clip model of the same
    architecture. Only ``state_dict()`` of the archive is read; none of its TorchScript code is
    run."""
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    expected = model.state_dict()
    # Buffers and scalars the archive carries but open_clip rebuilds (attn_mask,
    # input_resolution, context_length, vocab_size).
    state = {k: v for k, v in state.items() if k in expected}
    resize_pos_embed(state, model)  # for a forced image size, as open_clip does for its files
    missing = sorted(set(expected) - set(state))
    if missing:
        raise RuntimeError(
            f"{path}: TorchScript archive lacks '{missing[0]}' ({len(missing)} tensors): not "
            "weights of this CLIP architecture"
        )
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def encode_prompts(clip: nn.Module, model_name: str, prompts: list[str]) -> torch.Tensor:
    """L2-normalized text embeddings (len(prompts) × D) from the CLIP text encoder."""
    tokenizer = open_clip.get_tokenizer(model_name)
    device = next(clip.parameters()).device
    features = clip.encode_text(tokenizer(prompts).to(device)).float()
    return features / features.norm(dim=-1, keepdim=True)


class VitTower(nn.Module):
    """A CLIP ViT vision tower that runs block by block so callers can tap or adapt any block."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ValueError(
                f"expected an open_clip VisionTransformer, got {type(visual).__name__}"
            )
        self.visual = visual
        self.batch_first = getattr(visual.transformer, "batch_first", True)

    @property
    def width(self) -> int:
        return self.visual.transformer.width

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    def grid_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return (image_hw[0] // self.patch_size[0], image_hw[1] // self.patch_size[1])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W → B×(1+N)×D tokens after ln_pre (open_clip's own stem)."""
        return self.visual._embeds(images)

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Apply block `index` to batch-first tokens, honouring the tower's layout."""
        if self.batch_first:
            return self.blocks[index](tokens)
        return self.blocks[index](tokens.transpose(0, 1)).transpose(0, 1)

    def set_trainable_blocks(self, trainable: list[int]) -> None:
        """Freeze the whole tower, then unfreeze the listed blocks."""
        self.visual.requires_grad_(False)
        for index in trainable:
            self.blocks[index].requires_grad_(True)
