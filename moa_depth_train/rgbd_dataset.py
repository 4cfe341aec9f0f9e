"""The base of every training dataset: RGB-D samples, seeded augmentation, bad-sample skipping.

Every sample is a dict: `image` uint8 tensor 3×H×W (RGB), `depth` float32 tensor 1×H×W in
metres (0 = invalid), `focal` (float, pixels) and `path` (str). Unreadable samples are
reported once with logging.warning, recorded in `dataset.skipped` and replaced by the next
readable one, so one bad file does not stop a training run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Augment", "BadSampleError", "GroundTruthSearch", "RgbdDataset", "has_valid_depth"]

log = logging.getLogger(__name__)

#: ``(image H×W×3 uint8, depth H×W float32, rng) -> (image, depth)``: an augmentation.
Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class BadSampleError(Exception):
    """A sample that cannot be read or has inconsistent shapes."""


@dataclass(frozen=True)
class GroundTruthSearch:
    """Where a dataset's first sample with a valid depth pixel is (None: nowhere), and how
    many samples could not be read on the way (with the first reason)."""

    index: int | None = None
    unreadable: int = 0
    first_problem: str = ""


def has_valid_depth(depth: np.ndarray) -> bool:
    """Whether a depth map has a pixel a loss can use: finite and > 0 (what the trainer and
    the losses count as ground truth)."""
    return bool(np.any(np.isfinite(depth) & (depth > 0)))


class RgbdDataset(Dataset):
    """Sample assembly, per-(seed, epoch, index) augmentation and bad-sample skipping.

    Subclasses read one raw sample (``_read``), name it (``_path``) and may read its depth
    alone (``_read_depth``, for the ground-truth check before training).
    """

    #: What the samples are, for messages ("NYU", "KITTI", "bag").
    name = "RGB-D"

    def __init__(self, augment: Augment | None, seed: int) -> None:
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.skipped: list[str] = []

    def __len__(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws per epoch while keeping them reproducible."""
        self.epoch = epoch

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def _read_depth(self, index: int) -> np.ndarray:
        return self._read(index)[1]

    def _path(self, index: int) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the samples come from (for error messages)."""
        return self._path(0) if len(self) else "empty"

    def find_ground_truth(self) -> GroundTruthSearch:
        """The first sample whose depth has a valid pixel, and the unreadable ones before it.
        Reads depth only (no augmentation) and stops at the first hit: cheap for real data."""
        search = GroundTruthSearch()
        for index in range(len(self)):
            try:
                if has_valid_depth(self._read_depth(index)):
                    return replace(search, index=index)
            except BadSampleError as error:
                search = replace(
                    search,
                    unreadable=search.unreadable + 1,
                    first_problem=search.first_problem or str(error),
                )
        return search

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Sample ``index``; ``(epoch, index)`` (what the training sampler yields) draws that
        epoch's augmentation, so persistent DataLoader workers need no epoch broadcast."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for {size} samples")
        index %= size
        for offset in range(size):
            current = (index + offset) % size
            try:
                image, depth, focal = self._read(current)
            except BadSampleError as error:
                path = self._path(current)
                if path not in self.skipped:
                    self.skipped.append(path)
                    log.warning("skipping unreadable %s sample %s: %s", self.name, path, error)
                continue
            return self._to_sample(image, depth, focal, current, epoch)
        raise RuntimeError(
            f"no readable sample among {size} in {type(self).__name__} ({self.describe()})"
        )

    def _to_sample(
        self, image: np.ndarray, depth: np.ndarray, focal: float, index: int, epoch: int
    ) -> dict:
        if self.augment is not None:
            # Seeded per (seed, epoch, index): identical in any DataLoader worker layout.
            rng = np.random.default_rng([self.seed, epoch, index])
            image, depth = self.augment(image, depth, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "focal": float(focal),
            "path": self._path(index),
        }
