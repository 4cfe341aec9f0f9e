"""A teacher's labels of a bag's cached frames: made once, cached beside the frames.

Each decoded frame of a bag (``moa_depth_train.bag_frames``) is labelled once by the teacher
(``moa_depth_train.teacher``), in stamp order:

- a metric teacher without ``data.anchor_topic``: its depth, clamped to the student's depth
  range (outcome ``predicted``);
- with an anchor topic, the teacher's output is anchored to the frame's anchor by the node's
  anchoring (``moa_depth_ros.anchoring.AnchorTracker``, one tracker per bag): in inverse depth
  for a relative teacher, in depth for a metric one. A frame is labelled only when its own fit
  is used (outcome ``anchored``); frames whose fit is refused, or that have no anchor, get no
  label rather than a neighbour's fit. ``distill.anchor_smoothing`` 0 (default) fits each frame
  on its own; the node's 0.5 smooths the fit over the sequence as the node would;
- a prompt teacher takes the frame's anchor as its prompt, as the node gives it (pixels outside
  the depth range are holes); a frame without one gets no label (``missing`` /
  ``too_few_points``), as the node withholds it.

A label set is a folder ``teacher-<key>`` inside the bag's cache entry, holding the
``frame_labels`` files (``depth.npy``, ``valid_pixels.npy``) and ``meta.json`` (the teacher,
the settings, each outcome's count). The key is the teacher file's SHA-256 with every setting
that changes the labels (precision, depth range, anchor topic and anchoring settings; not the
device): another teacher never reuses a label set, the same teacher on the same bag always
does. The folder is written beside its place and renamed into it when complete
(``bag_frames.build_atomically``), so an interrupted labelling (Ctrl-C) is never reused, and a
bag the teacher labels nothing in is refused (one line) and never cached.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moa_depth_ros.anchoring import AnchorSettings, AnchorTracker, depth_prompt
from moa_depth_ros.errors import one_line
from moa_depth_ros.progress import progress_bar
from moa_depth_train.bag_frames import CACHE_SETTING, META_FILE, BagFrames, build_atomically
from moa_depth_train.config import DistillConfig
from moa_depth_train.directories import setting_error
from moa_depth_train.frame_labels import FrameLabels, LabelWriter
from moa_depth_train.teacher import SETTING, Teacher, TeacherError, TeacherFile, open_teacher

__all__ = ["LABELS_VERSION", "TeacherLabeler", "anchor_settings"]

#: Bumped whenever how labels are made changes, so older label sets are not reused.
LABELS_VERSION = 1
PREFIX = "teacher-"
HINT = "check the teacher file, data.anchor_topic and distill.anchor_*"


def anchor_settings(
    distill: DistillConfig, space: str, depth_range: tuple[float, float]
) -> AnchorSettings:
    """The node's anchoring settings for a teacher whose output is fitted in ``space``
    (inverse_depth: relative; depth: metric); mode auto is scale_shift for a relative teacher
    (inverse depth needs both) and scale for a metric one."""
    mode = distill.anchor_mode
    if mode == "auto":
        mode = "scale_shift" if space == "inverse_depth" else "scale"
    values = {**asdict(distill), "anchor_mode": mode, "anchor_fill": "none"}
    return AnchorSettings.from_prefixed(
        values, min_depth=depth_range[0], max_depth=depth_range[1], space=space
    )


@dataclass(frozen=True)
class _Plan:
    """How one teacher's output becomes labels."""

    depth_range: tuple[float, float]
    batch_size: int
    prompt: bool  # the anchor is the teacher's input
    anchoring: AnchorSettings | None  # the teacher's output is fitted to the anchor


def _prompt(anchor: np.ndarray | None, depth_range: tuple[float, float]) -> tuple[Any, str]:
    """(the prompt, outcome) of a prompt teacher, as the node's ``prompt_for`` gives it."""
    if anchor is None:
        return None, "missing"
    prompt, _ = depth_prompt(anchor, depth_range)
    return prompt, "prompted" if prompt is not None else "too_few_points"


def _predict(teacher: Teacher, frames: BagFrames, *args: Any) -> list[np.ndarray]:
    """The teacher's predictions; a failure (an exported graph of another input size, out of
    memory) is one line naming the teacher and the bag."""
    try:
        return teacher.predict(*args)
    except (ValueError, RuntimeError) as err:
        hint = "; lower distill.batch_size" if "out of memory" in str(err).lower() else ""
        raise TeacherError(
            f"{SETTING} '{teacher.file.path.name}' cannot label bag '{frames.name}': "
            f"{one_line(err)}{hint}"
        ) from err


def _summary(outcomes: Counter, empty: int) -> str:
    parts = [f"{count} {name}" for name, count in sorted(outcomes.items())]
    if empty:
        parts.append(f"{empty} labelled but without a finite depth > 0 in range")
    return ", ".join(parts)


def _label_bag(
    frames: BagFrames, teacher: Teacher, plan: _Plan, out: Path, progress: bool
) -> dict[str, Any]:
    """Label every frame of ``frames`` into ``out``; the label set's metadata."""
    start = time.perf_counter()
    writer = LabelWriter(out, frames.slot_count, (frames.meta["height"], frames.meta["width"]))
    tracker = AnchorTracker(plan.anchoring) if plan.anchoring is not None else None
    outcomes: Counter[str] = Counter()
    empty = 0
    bar = progress_bar(
        total=len(frames), desc=f"label {frames.name}", unit="frame", disable=not progress
    )
    for first in range(0, len(frames), plan.batch_size):
        batch = range(first, min(first + plan.batch_size, len(frames)))
        images = [frames.read_image(i) for i in batch]
        anchors = [frames.read_anchor(i) for i in batch]
        labels: list[np.ndarray | None] = [None] * len(images)
        if plan.prompt:
            prompts = [_prompt(a, plan.depth_range) for a in anchors]
            todo = [k for k, (p, _) in enumerate(prompts) if p is not None]
            predictions = _predict(
                teacher, frames, [images[k] for k in todo], plan.depth_range,
                [prompts[k][0] for k in todo],
            )  # fmt: skip
            for k, depth in zip(todo, predictions, strict=True):
                labels[k] = depth
            outcomes.update(outcome for _, outcome in prompts)
        else:
            for k, prediction in enumerate(_predict(teacher, frames, images, plan.depth_range)):
                if tracker is None:
                    labels[k] = prediction
                    outcomes["predicted"] += 1
                    continue
                anchored = tracker.anchor(prediction, anchors[k], plan.anchoring)
                outcomes[anchored.outcome] += 1
                if anchored.outcome == "anchored":  # this frame's own fit was used
                    labels[k] = anchored.depth
        for k, label in zip(batch, labels, strict=True):
            slot = int(frames.frames[k])
            if label is not None:
                writer[slot] = label
                empty += int(writer.valid_pixels[slot] == 0)
        bar.update(len(images))
    bar.close()
    writer.close()
    labelled = int((writer.valid_pixels[frames.frames] > 0).sum())
    summary = _summary(outcomes, empty)
    if labelled == 0:
        raise TeacherError(
            f"{SETTING} '{teacher.file.path.name}' labelled none of the {len(frames)} frames of "
            f"bag '{frames.name}' ({summary}); {HINT}"
        )
    return {
        "version": LABELS_VERSION,
        "teacher": teacher.record(),
        "frames": len(frames),
        "labelled": labelled,
        "outcomes": dict(sorted(outcomes.items())),
        "summary": summary,
        "seconds": round(time.perf_counter() - start, 2),
    }


class TeacherLabeler:
    """The teacher's label sets of a run's bags: from the cache, or made (loading the teacher
    the first time one is needed, or when :meth:`load` is called to check it early)."""

    def __init__(
        self,
        distill: DistillConfig,
        anchor_topic: str | None,
        depth_range: tuple[float, float],
        cache_dir: Path,
        init: str | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if distill.teacher is None:
            raise ValueError("distill.teacher is not set")
        self.distill, self.anchor_topic = distill, anchor_topic
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.cache_dir, self.report = Path(cache_dir), report
        self.file = TeacherFile.of(distill.teacher, init)
        self.teacher: Teacher | None = None
        self._record: dict[str, Any] | None = None

    def load(self) -> Teacher:
        """The teacher, loaded once: TeacherError for one that cannot label these bags."""
        if self.teacher is None:
            self.teacher = open_teacher(self.file, self.distill, self.anchor_topic)
            self._record = self.teacher.record()
        return self.teacher

    def release(self) -> None:
        """Free the teacher's memory (labelling is done; its record stays)."""
        if self.teacher is not None:
            self.teacher.release()
            self.teacher = None

    def record(self) -> dict[str, Any]:
        """The teacher (name, SHA-256, model type, output kind, ...) and how it labelled."""
        teacher = self._record or {"name": self.file.path.name, "sha256": self.file.sha256}
        return {"teacher": teacher, "labels": self.key()}

    def describe(self) -> str:
        return f"teacher {self.file.path.name}"

    def key(self) -> dict[str, Any]:
        """Every setting that changes the labels (the cache key, with the teacher's hash)."""
        settings = asdict(self.distill)
        anchoring = {k: v for k, v in settings.items() if k.startswith("anchor_")}
        return {
            "version": LABELS_VERSION,
            "teacher_sha256": self.file.sha256,
            "precision": self.distill.precision,
            "depth_range": list(self.depth_range),
            "anchor_topic": self.anchor_topic,
            "anchoring": anchoring if self.anchor_topic is not None else None,
        }

    def _plan(self, teacher: Teacher) -> _Plan:
        prompt = teacher.takes_depth_prompt
        anchoring = None
        if self.anchor_topic is not None and not prompt:
            anchoring = anchor_settings(self.distill, teacher.fit_space, self.depth_range)
        return _Plan(self.depth_range, self.distill.batch_size, prompt, anchoring)

    def labels_for(self, frames: BagFrames, progress: bool) -> FrameLabels:
        """The teacher's label set of ``frames``: the cached one, or made now (with a progress
        bar and its ETA). TeacherError when the teacher labels no frame of the bag."""
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()
        entry = frames.directory / f"{PREFIX}{digest[:16]}"
        cached = (entry / META_FILE).is_file()
        try:
            if not cached:
                teacher = self.load()
                plan = self._plan(teacher)
                build_atomically(
                    entry, lambda tmp: _label_bag(frames, teacher, plan, tmp, progress)
                )
            meta = json.loads((entry / META_FILE).read_text())
        except OSError as exc:
            raise setting_error(CACHE_SETTING, self.cache_dir, exc) from exc
        if self.report is not None:
            how = "cached" if cached else f"in {meta['seconds']:g} s"
            self.report(
                f"bag {frames.name}: teacher {self.file.path.name} labelled {meta['labelled']} "
                f"of {meta['frames']} frames ({meta['summary']}; {how})"
            )
        record = {k: meta[k] for k in ("frames", "labelled", "outcomes")}
        record = {"source": "teacher", "sha256": self.file.sha256, **record}
        return FrameLabels(entry, f"the labels of {self.describe()}", hint=HINT, record=record)
