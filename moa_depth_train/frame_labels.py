"""Depth labels of a bag's cached frames, kept apart from the frames themselves.

A label set is one folder with ``depth.npy`` (float32 N×H×W metres, 0 = invalid, one map per
cache slot) and ``valid_pixels.npy`` (each map's count of usable pixels, so the ground-truth
check before training reads no depth map). The recorded depth topic's labels are written by
the decode pass into the cache entry itself; another label source (a teacher network's
predictions: ``moa_depth_train.teacher_labels``) writes the same two files into a folder of
its own beside the frames, named by what produced them, and is read through
:class:`FrameLabels` the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

__all__ = ["DEPTH_FILE", "VALID_PIXELS_FILE", "FrameLabels", "LabelWriter"]

DEPTH_FILE = "depth.npy"
VALID_PIXELS_FILE = "valid_pixels.npy"


class LabelWriter:
    """Writes a label set slot by slot; invalid depth (NaN, inf, <= 0) is stored as 0."""

    def __init__(self, directory: Path, count: int, size: tuple[int, int]) -> None:
        self.directory = directory
        self.depth = open_memmap(directory / DEPTH_FILE, "w+", np.float32, (count, *size))
        self.valid_pixels = np.zeros(count, dtype=np.int64)

    def __setitem__(self, slot: int, depth: np.ndarray) -> None:
        usable = np.isfinite(depth) & (depth > 0)
        self.depth[slot] = np.where(usable, depth, 0)
        self.valid_pixels[slot] = int(usable.sum())

    def close(self) -> None:
        """Flush the maps to disk (before the folder is renamed into place)."""
        self.depth.flush()
        del self.depth
        np.save(self.directory / VALID_PIXELS_FILE, self.valid_pixels)


class FrameLabels:
    """A label set, memory-mapped lazily in each process (DataLoader workers map it too)."""

    def __init__(
        self,
        directory: Path,
        source: str,
        hint: str = "check the topic and the depth sensor",
        record: dict[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.source = source  # what produced them, for messages: "depth topic /camera/depth"
        self.hint = hint  # what to check when a bag has none: said after the source
        self.record = record  # what produced them, for checkpoint metadata (JSON), if more
        self.valid_pixels = np.load(directory / VALID_PIXELS_FILE)
        self._depth: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_depth": None}  # pickling a memmap would copy its data

    def read(self, slot: int) -> np.ndarray:
        """Slot ``slot``'s depth map, copied out of the (read-only) map."""
        if self._depth is None:
            self._depth = np.load(self.directory / DEPTH_FILE, mmap_mode="r")
        return np.array(self._depth[slot])
