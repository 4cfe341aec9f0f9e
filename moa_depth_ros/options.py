"""Choices shared by the estimator, the node's parameters and every CLI (defined once here).

Kept free of torch and ROS so the node's parameter table and ``--help`` load instantly. Also
the one parser of the CLIs' ``--set key=value`` overrides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Inference precisions (fp16 needs CUDA).
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


def _backend_names() -> tuple[str, ...]:
    """Every ``inference/<name>_backend.py``, torch first: a new backend is one new file there.
    Read from file names so the node's parameter table needs no torch import."""
    found = sorted(p.stem[: -len("_backend")] for p in _INFERENCE.glob("*_backend.py"))
    return ("torch", *(name for name in found if name != "torch"))


_INFERENCE = Path(__file__).parent / "inference"
#: Inference backends.
BACKENDS: tuple[str, ...] = _backend_names()
#: ONNX Runtime provider choices (auto: CUDA when the device is CUDA).
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr_new=3e-4' → (['optim', 'lr_new'], 0.0003); values are parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; people mean a number.
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip().split("."), value


def model_config_with(base: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``base`` with ``--set key=value`` overrides of model config keys (which are flat)."""
    config = dict(base)
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ValueError(f"--set takes model config keys (no '.'), got {'.'.join(keys)!r}")
        config[keys[0]] = value
    return config
