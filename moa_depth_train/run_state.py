"""A run directory's resumable state and metrics log, safe to load from a shared run directory.

``state.pt`` holds only tensors and plain Python values (numbers, strings, lists, dicts): it is
written with ``torch.save`` and read with ``torch.load(weights_only=True)``, whose restricted
unpickler refuses any other object, so loading a crafted file never runs code from it.
RNG states are converted to tensors and lists for that reason.

``metrics.jsonl`` holds one JSON record per logged step and per validation; on resume the
records past the resumed step are dropped, so the log never holds a step twice.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.errors import one_line

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"


class RunStateError(RuntimeError):
    """A run state that cannot be used; one line naming the file."""


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (a half-written state never replaces a good one)."""
    path = run_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_state(run_dir: Path) -> dict[str, Any]:
    """The saved state; RunStateError (one line naming the file) for a missing, corrupt or
    unsafe file."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise RunStateError(f"{path}: no run state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise RunStateError(
            f"{path}: refusing to load: it holds objects other than tensors and plain values "
            f"({one_line(err).split('.')[0]})"
        ) from err
    except Exception as err:  # truncated zip, garbage bytes
        raise RunStateError(f"{path}: not a readable run state ({one_line(err)})") from err
    if not isinstance(state, dict) or "step" not in state:
        raise RunStateError(f"{path}: not a moa_depth_train run state")
    return state


class MetricsLog:
    """Append-only JSON-lines log of a run (only the writing process writes it)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled

    def append(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop records of steps after ``step`` (a resume replays them); how many were dropped."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record_step = json.loads(line).get("step", 0)
            except json.JSONDecodeError:
                dropped += 1  # a line cut short by a crash
                continue
            if record_step > step:
                dropped += 1
            else:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
        return dropped

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]
