"""The teacher of a distillation run (``distill.teacher``): any model file the node loads — a
checkpoint (a trained seed model, an ``hf_depth`` foundation model) or an exported ``.onnx``
graph — opened through ``load_estimator`` exactly as the node opens it.

What the teacher's output needs before it can be a label is decided here, once, from the
loaded estimator: a metric teacher's depth is metres; a relative teacher's is affine-invariant
inverse depth and needs ``data.anchor_topic`` to be anchored in inverse depth, as the node
anchors it; a prompt teacher (``takes_depth_prompt``) takes the anchor topic as its prompt.
A teacher that cannot give metres from what the bags hold is refused with one line.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_train.config import DistillConfig

__all__ = ["Teacher", "TeacherError", "TeacherFile", "open_teacher"]

SETTING = "distill.teacher"


class TeacherError(ValueError):
    """A teacher that cannot label the run's bags; one line naming distill.teacher."""


@dataclass(frozen=True)
class TeacherFile:
    """The teacher's file and its SHA-256 (what its labels are keyed by)."""

    path: Path
    sha256: str

    @classmethod
    def of(cls, path: str | Path, init: str | Path | None = None) -> TeacherFile:
        """The file at ``path``; TeacherError when it is missing, not a file, or the same
        file (by content) as the run's ``--init`` checkpoint."""
        path = Path(path)
        if not path.exists():
            raise TeacherError(f"{SETTING} '{path}': file not found")
        if not path.is_file():
            raise TeacherError(f"{SETTING} '{path}': not a file (a checkpoint or .onnx graph)")
        try:
            digest = file_sha256(path)
        except OSError as err:
            raise TeacherError(
                f"{SETTING} '{path}': {(err.strerror or one_line(err)).lower()}"
            ) from err
        # Sizes first: a file of another size is another file, without reading it again.
        same_size = (
            init is not None
            and Path(init).is_file()
            and (Path(init).stat().st_size == path.stat().st_size)
        )
        if same_size and file_sha256(init) == digest:
            raise TeacherError(
                f"{SETTING} '{path}' is the same file as --init '{init}' (SHA-256 "
                f"{digest[:12]}...): a model distilled into itself learns nothing; start the "
                "student from another checkpoint or from scratch"
            )
        return cls(path, digest)


class Teacher:
    """A loaded teacher: its estimator and what its output is."""

    def __init__(self, file: TeacherFile, estimator: DepthEstimator) -> None:
        self.file, self.estimator = file, estimator
        self.model_type: str = estimator.model_type
        #: "metric" (metres) or "relative" (affine-invariant inverse depth).
        self.output_kind: str = estimator.output_kind
        self.takes_depth_prompt: bool = estimator.takes_depth_prompt

    @property
    def fit_space(self) -> str:
        """Where its output is anchored (moa_depth_ros.anchoring): inverse depth when relative."""
        return "inverse_depth" if self.output_kind == "relative" else "depth"

    def record(self) -> dict[str, Any]:
        """What the checkpoint says about the teacher (JSON)."""
        return {
            "name": self.file.path.name,
            "sha256": self.file.sha256,
            "model_type": self.model_type,
            "output_kind": self.output_kind,
            "takes_depth_prompt": self.takes_depth_prompt,
            "backend": self.estimator.backend.name,
            "precision": self.estimator.precision,
        }

    def describe(self) -> str:
        kind = "prompt" if self.takes_depth_prompt else self.output_kind
        return f"{self.file.path.name} ({self.model_type}, {kind})"

    def predict(
        self,
        images: Sequence[np.ndarray],
        depth_range: tuple[float, float],
        prompts: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """H×W float32 per image: metres clamped to ``depth_range`` (metric), or relative
        inverse depth (relative); NaN where the network gave nothing finite."""
        if not images:
            return []
        results = self.estimator.predict_batch(list(images), depth_range, prompts)
        return [result.depth for result in results]

    def release(self) -> None:
        """Drop the network (the student trains next, on the same device)."""
        del self.estimator
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def open_teacher(file: TeacherFile, distill: DistillConfig, anchor_topic: str | None) -> Teacher:
    """The teacher loaded as the node loads it; TeacherError (one line) for a file that does
    not load, and for a teacher whose labels could not be metres: a relative or a prompt
    teacher without ``data.anchor_topic``."""
    options = InferenceOptions(
        checkpoint=str(file.path), device=distill.device, precision=distill.precision,
        warmup=False,
    )  # fmt: skip
    try:
        estimator = load_estimator(options)
    except Exception as err:  # noqa: BLE001 - any failure to load is the file's: one line
        raise TeacherError(f"{SETTING} '{file.path}' cannot be loaded: {one_line(err)}") from err
    teacher = Teacher(file, estimator)
    if anchor_topic is None and teacher.takes_depth_prompt:
        raise TeacherError(
            f"{SETTING} '{file.path}' ({teacher.model_type}) takes a depth prompt with every "
            "frame: set data.anchor_topic to the bags' sparse metric depth (projected LiDAR, a "
            "depth camera) to prompt it with"
        )
    if anchor_topic is None and teacher.output_kind == "relative":
        raise TeacherError(
            f"{SETTING} '{file.path}' ({teacher.model_type}) is a relative model: its output "
            "is inverse depth up to an unknown scale and shift, not metres; set "
            "data.anchor_topic to the bags' sparse metric depth (projected LiDAR, a holey depth "
            "camera) to anchor it as the node does"
        )
    return teacher
