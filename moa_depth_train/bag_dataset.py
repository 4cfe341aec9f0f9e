"""Training samples from a robot's own rosbags (``data.type: bag``).

The bags' frames come decoded and cached from ``moa_depth_train.bag_frames``; samples are those
of the image datasets (``moa_depth_train.rgbd_dataset``): the native frame, depth in metres
(0 = invalid), the colour camera's fx in native pixels, with the same augmentation.

Validation frames are whole contiguous time segments (``segment_s`` long) of each bag, spread
evenly over its timeline: a segment is entirely train or entirely validation, so no validation
frame sits between two training frames of its segment (a near-copy the model trained on).

Distillation (``distill.teacher``): training frames carry a teacher's labels
(``moa_depth_train.teacher_labels``); validation and test frames carry the depth topic's when
there is one (the teacher never labels them then), else the teacher's too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from moa_depth_train.bag_frames import BagFrames, default_cache_dir, load_bag
from moa_depth_train.bag_source import BagDataError, BagSource
from moa_depth_train.config import DataConfig
from moa_depth_train.frame_labels import FrameLabels
from moa_depth_train.rgbd_dataset import Augment, RgbdDataset

__all__ = [
    "BagDataset",
    "Labeler",
    "bag_datasets",
    "bag_source",
    "cache_dir_of",
    "split_by_segments",
]


class Labeler(Protocol):
    """A label source for a bag's frames besides its depth topic (a teacher)."""

    def labels_for(self, frames: BagFrames, progress: bool) -> FrameLabels:
        """The label set of ``frames`` (made, or found in the cache)."""
        ...


# ---------------------------------------------------------------------------- split


def split_by_segments(
    stamps_ns: Sequence[int], val_fraction: float, segment_s: float, name: str = "bag"
) -> tuple[list[int], list[int]]:
    """(train, validation) frame indices: the timeline cut into ``segment_s`` segments from
    the first stamp, ``val_fraction`` of the occupied segments (at least one, never all)
    evenly spread over it held out whole."""
    if not 0.0 < val_fraction < 1.0:
        raise BagDataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    if not segment_s > 0:
        raise BagDataError(f"data.segment_s must be > 0, got {segment_s}")
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    segment = (stamps - stamps.min()) // round(segment_s * 1e9)
    occupied = np.unique(segment)
    count = len(occupied)
    if count < 2:
        raise BagDataError(
            f"{name} spans {count} segment of data.segment_s={segment_s:g} s: too short to "
            "hold out validation segments; lower data.segment_s or give data.val bags"
        )
    held = min(max(1, round(val_fraction * count)), count - 1)
    chosen = occupied[((np.arange(held) + 0.5) * count / held).astype(int)]
    is_val = np.isin(segment, chosen)
    return np.flatnonzero(~is_val).tolist(), np.flatnonzero(is_val).tolist()


# ---------------------------------------------------------------------------- datasets


class BagDataset(RgbdDataset):
    """Frames of one or more cached bags; samples as the image datasets give them."""

    name = "bag"

    def __init__(
        self,
        bags: Sequence[BagFrames],
        items: Sequence[tuple[int, int]] | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(augment, seed)
        self.bags = list(bags)
        if items is None:
            items = [(b, i) for b, bag in enumerate(self.bags) for i in range(len(bag))]
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        bag, frame = self.items[index]
        image, depth = self.bags[bag].read(frame)
        return image, depth, self.bags[bag].focal

    def _path(self, index: int) -> str:
        bag, frame = self.items[index]
        return f"{self.bags[bag].name}@{int(self.bags[bag].stamps[frame])}"

    def describe(self) -> str:
        return f"bags {', '.join(b.name for b in self.bags)} ({len(self)} frames)"

    def stamp(self, index: int) -> int:
        bag, frame = self.items[index]
        return int(self.bags[bag].stamps[frame])

    def subset(self, items: Sequence[tuple[int, int]], augment: Augment | None) -> BagDataset:
        return BagDataset(self.bags, items, augment, self.seed)

    def records(self) -> list[dict[str, Any]]:
        return [bag.record() for bag in self.bags]

    def labelled_only(self) -> BagDataset:
        """The frames that have a usable depth pixel (from the cached counts)."""
        items = [(b, i) for b, i in self.items if self.bags[b].has_ground_truth(i)]
        return self.subset(items, self.augment)

    def bags_without_ground_truth(self) -> list[tuple[BagFrames, int]]:
        """(bag, its frame count here) of each bag none of whose frames in this dataset has
        a valid depth pixel (from the cached counts: no depth map is read)."""
        frames = Counter(b for b, _ in self.items)
        labelled = {b for b, i in self.items if self.bags[b].has_ground_truth(i)}
        return [(self.bags[b], frames[b]) for b in sorted(set(frames) - labelled)]


def bag_source(data: DataConfig) -> BagSource:
    """The topics and pairing that ``data.*`` names (data.type: bag)."""
    return BagSource(
        data.image_topic, data.depth_topic, data.camera_info_topic, data.focal, data.slop_ms,
        data.stride, data.anchor_topic,
    )  # fmt: skip


def cache_dir_of(data: DataConfig) -> Path:
    """Where decoded bag frames are cached: ``data.cache_dir`` or the user's cache."""
    return Path(data.cache_dir) if data.cache_dir else default_cache_dir()


def bag_datasets(
    data: DataConfig,
    augment: Augment | None,
    seed: int,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    teacher: Labeler | None = None,
) -> tuple[BagDataset, BagDataset | None, BagDataset | None]:
    """(train, validation, test) from the ``data.*`` keys of ``data.type: bag``: train from
    ``data.bags`` (minus the held-out segments with ``data.val_fraction``), validation and
    test from ``data.val`` / ``data.test`` bags, whole. ``report`` gets one line per bag
    (pairs, unpaired messages, frames). With a ``teacher`` the training frames carry its
    labels, validation and test frames the depth topic's (the teacher's without one)."""
    source = bag_source(data)
    cache = cache_dir_of(data)

    def load(paths: Sequence[str]) -> list[BagFrames]:
        bags = [load_bag(p, source, cache, progress) for p in paths]
        for bag in bags if report is not None else ():
            report(bag.summary())
        return bags

    def labelled(bags: list[BagFrames], train: bool) -> list[BagFrames]:
        if teacher is None or (not train and data.depth_topic is not None):
            return bags
        return [bag.with_labels(teacher.labels_for(bag, progress)) for bag in bags]

    def dataset(bags: list[BagFrames], train: bool) -> BagDataset:
        return BagDataset(labelled(bags, train), augment=augment if train else None, seed=seed)

    train_bags = load(data.bags)
    train = dataset(train_bags, True)
    val = dataset(load(data.val), False) if data.val else None
    if val is None and data.val_fraction:
        train_items, val_items = [], []
        for b, bag in enumerate(train.bags):
            kept, held = split_by_segments(
                bag.stamps, data.val_fraction, data.segment_s, f"bag '{bag.name}'"
            )
            train_items += [(b, i) for i in kept]
            val_items += [(b, i) for i in held]
        # The held-out segments score against the depth topic when there is one.
        depth_topic = teacher is not None and data.depth_topic is not None
        val_bags = train_bags if depth_topic else train.bags
        val = BagDataset(val_bags, val_items, None, seed)
        train = train.subset(train_items, augment)
    if teacher is not None:
        # A frame the teacher gave no label (its anchor fit refused, no anchor) teaches nothing:
        # kept, it would only make empty batches, and enough of them in a row abort the run.
        labelled = train.labelled_only()
        if report is not None and len(labelled) < len(train):
            report(f"training on the {len(labelled)} of {len(train)} frames the teacher labelled")
        train = labelled
    test = dataset(load(data.test), False) if data.test else None
    return train, val, test
