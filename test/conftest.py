"""Shared test setup: offline, deterministic, quiet open_clip, small model configs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny open_clip architectures (ViT-T-32-test, RN-T-test, ViT-T-16-test) exist for tests
# only; set before the product is imported, and inherited by the processes tests start.
os.environ["MOA_DEPTH_OPEN_CLIP_CONFIGS"] = str(Path(__file__).parent / "open_clip_configs")

import pytest  # noqa: E402
import torch  # noqa: E402

# open_clip logs a warning per random-init model; tests build many.
logging.getLogger().setLevel(logging.ERROR)

# A ViT with the real block count (12) but tiny width, so MoA at blocks 2, 5, 8, 11 is exercised.
TINY_MOA = {
    "type": "moa_depthclip",
    "clip_model": "ViT-T-32-test",
    "clip_pretrained": "none",
    "adapter_dim": 8,
    "gate_hidden": 16,
    "num_bins": 32,
}
TINY_DEPTHCLIP = {
    "type": "depthclip",
    "clip_model": "RN-T-test",
    "clip_pretrained": "none",
    "image_size": [96, 128],
}
TINY_SPACE_CLIP = {
    "type": "space_clip",
    "clip_model": "ViT-T-16-test",
    "clip_pretrained": "none",
    "image_size": 64,
    "decoder_channels": [32, 16, 8, 8],
    "film_hidden": 16,
}
TINY_DEPTHBLIP2 = {"type": "depthblip2", "size": "tiny", "temperature": 0.01}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_moa_config() -> dict:
    return dict(TINY_MOA)


@pytest.fixture
def tiny_depthclip_config() -> dict:
    return dict(TINY_DEPTHCLIP)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
