"""The frame cache: a bag's decoded frames and labels on disk, decoded once, then memory-mapped
by every later run and DataLoader worker, so no epoch decodes the bag again.

An entry ``<cache_dir>/<bag name>-<key>/`` is keyed by the bag's SHA-256 and the
``BagSource`` (topics, slop, stride) and holds the frames (``moa_depth_train.bag_decode``)
with the depth topic's label set (``moa_depth_train.frame_labels``) and the anchor topic's
maps; a teacher's label sets are added into it later (``moa_depth_train.teacher_labels``).
Every folder appears under its name only once complete (``build_atomically``: written beside
it, then renamed), so an interrupted decode or labelling never leaves one a later run would
trust; what an interrupted process leaves behind is removed by the next run on the same
machine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from moa_depth_ros.bags.io import BagError
from moa_depth_ros.errors import one_line
from moa_depth_train.bag_decode import (
    ANCHOR_DIR,
    ANCHOR_PAIRED_FILE,
    IMAGES_FILE,
    STAMPS_FILE,
    VALID_FILE,
    decode_bag,
)
from moa_depth_train.bag_fingerprint import bag_fingerprint
from moa_depth_train.bag_source import CACHE_VERSION, BagDataError, BagSource
from moa_depth_train.directories import setting_error
from moa_depth_train.frame_labels import FrameLabels

__all__ = ["BagFrames", "build_atomically", "default_cache_dir", "load_bag"]

META_FILE = "meta.json"
CACHE_SETTING = "data.cache_dir"


class BagFrames:
    """One bag's decoded frames in the cache with their labels (mapped lazily per process).

    ``labels`` is the label set samples carry: the depth topic's when the bag is read (None
    without a depth topic), another (a teacher's) through :meth:`with_labels`. ``anchors``:
    the anchor topic's maps, or None."""

    def __init__(
        self,
        directory: Path,
        meta: dict[str, Any],
        focal: float | None,
        labels: FrameLabels | None,
        anchors: FrameLabels | None = None,
    ) -> None:
        self.directory, self.meta, self.labels, self.anchors = directory, meta, labels, anchors
        self.name: str = meta["bag"]["name"]
        self.focal = focal if focal is not None else meta["camera_info_fx"]
        valid = np.load(directory / VALID_FILE)
        self.frames = np.flatnonzero(valid)  # cache slots that hold a whole frame
        self.slot_count = len(valid)  # every slot, whole or not (the label maps' length)
        self.stamps = np.load(directory / STAMPS_FILE)[self.frames]
        self._images: np.ndarray | None = None
        self._anchor_paired: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __getstate__(self) -> dict:
        # DataLoader workers map the files themselves (pickling a memmap copies its data).
        return {**self.__dict__, "_images": None}

    def with_labels(self, labels: FrameLabels) -> BagFrames:
        """These frames carrying another label set (a teacher's)."""
        other = copy.copy(self)
        other.labels, other._images = labels, None
        return other

    def _label_set(self) -> FrameLabels:
        if self.labels is None:
            raise RuntimeError(f"bag '{self.name}' has no depth topic and no teacher labels")
        return self.labels

    def read_image(self, index: int) -> np.ndarray:
        """Frame ``index``'s RGB, copied out of the (read-only) map."""
        if self._images is None:
            self._images = np.load(self.directory / IMAGES_FILE, mmap_mode="r")
        return np.array(self._images[self.frames[index]])

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``'s RGB and depth, copied out of the (read-only) maps."""
        return self.read_image(index), self._label_set().read(self.frames[index])

    def read_depth(self, index: int) -> np.ndarray:
        return self._label_set().read(self.frames[index])

    def read_anchor(self, index: int) -> np.ndarray | None:
        """Frame ``index``'s anchor map (metres, 0 where the sensor has none), or None when no
        anchor message was paired with it (or there is no anchor topic)."""
        if self.anchors is None:
            return None
        if self._anchor_paired is None:
            self._anchor_paired = np.load(self.anchors.directory / ANCHOR_PAIRED_FILE)
        slot = self.frames[index]
        return self.anchors.read(slot) if self._anchor_paired[slot] else None

    def has_ground_truth(self, index: int) -> bool:
        """Whether frame ``index``'s depth has a usable pixel (from the labels' counts)."""
        return bool(self._label_set().valid_pixels[self.frames[index]] > 0)

    def record(self) -> dict[str, Any]:
        """The bag and what was taken from it (JSON; for checkpoint metadata); with a teacher's
        labels, what the teacher made of it."""
        record = {**self.meta["bag"], **self.meta["counts"]}
        if self.labels is not None and self.labels.record is not None:
            record["labels"] = self.labels.record
        return record

    def summary(self) -> str:
        c, source = self.meta["counts"], self.meta["source"]
        slop = f"{source['slop_ms']:g} ms"
        if "pairs" in c:
            line = (
                f"bag {self.name}: {c['pairs']} pairs within {slop} ({c['unpaired_image']} "
                f"images and {c['unpaired_depth']} depth images unpaired)"
            )
        else:
            line = f"bag {self.name}: {c['images']} images (no depth topic)"
        if "anchors" in c:
            line += (
                f", {c['frames_paired_with_anchor']} of the kept frames with an anchor on "
                f"{source['anchor_topic']} within {slop}"
            )
        if self.meta["source"]["stride"] > 1:
            line += f", stride {self.meta['source']['stride']}"
        if c["undecodable"]:
            line += f", {c['undecodable']} undecodable ({c['first_problem']})"
        return f"{line}: {len(self)} frames {self.meta['width']}x{self.meta['height']}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moa_depth_ros/bags"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _remove_abandoned(cache_dir: Path, entry: str, host: str) -> None:
    """Half-written entries of processes on this host that are gone (killed mid-decode):
    never read, only taking space."""
    for tmp in cache_dir.glob(f".{entry}.{host}.*.tmp"):
        pid = tmp.name.removesuffix(".tmp").rsplit(".", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _in_cache(err: OSError, cache_dir: Path) -> bool:
    """Whether ``err`` is about the cache (not the bag being read)."""
    if not err.filename:
        return True  # a flush of a map in the cache (no space left, ...)
    with contextlib.suppress(ValueError):
        Path(err.filename).resolve().relative_to(cache_dir.resolve())
        return True
    return False


def build_atomically(entry: Path, fill: Callable[[Path], dict[str, Any]]) -> None:
    """Create folder ``entry``: ``fill(tmp)`` writes its files into a temporary folder beside
    it and returns its metadata (``meta.json``, written last); the folder is then renamed into
    place. An interruption (Ctrl-C, an error) leaves no ``entry``, and the temporary folder of
    a process that was killed is removed by the next build of the same entry on this host."""
    host = socket.gethostname().replace(".", "_")
    _remove_abandoned(entry.parent, entry.name, host)
    tmp = entry.parent / f".{entry.name}.{host}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        meta = fill(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        try:
            tmp.rename(entry)
        except OSError:
            if not (entry / META_FILE).is_file():  # not just another process first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _decode_into(path: Path, source: BagSource, entry: Path, bag: dict, progress: bool) -> None:
    def fill(tmp: Path) -> dict[str, Any]:
        meta = decode_bag(path, source, tmp, progress)
        meta.update(version=CACHE_VERSION, bag=bag, source=source.cache_key())
        return meta

    build_atomically(entry, fill)


def load_bag(
    path: str | Path, source: BagSource, cache_dir: Path, progress: bool = True
) -> BagFrames:
    """The bag's frames from the cache, decoding the bag into it first when it is not there.
    BagDataError for a bag that cannot be trained on, or (naming data.cache_dir) a cache that
    cannot be written."""
    path, cache_dir = Path(path), Path(cache_dir)
    if not path.exists():
        raise BagDataError(f"bag '{path}' does not exist")
    try:
        bag = bag_fingerprint(path, cache_dir / "sha256.json")
        key_text = json.dumps({"bag": bag["sha256"], **source.cache_key()}, sort_keys=True)
        key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
        entry = cache_dir / f"{path.name}-{key}"
        if not (entry / META_FILE).is_file():
            _decode_into(path, source, entry, bag, progress)
        meta = json.loads((entry / META_FILE).read_text())
    except BagError as exc:
        raise BagDataError(one_line(exc)) from exc
    except OSError as exc:
        if _in_cache(exc, cache_dir):
            raise setting_error(CACHE_SETTING, cache_dir, exc) from exc
        raise BagDataError(f"bag '{path}': {(exc.strerror or one_line(exc)).lower()}") from exc
    if source.focal is None and meta["camera_info_fx"] is None:
        raise BagDataError(f"bag '{path}' has no camera_info; set data.focal (pixels)")
    labels = None
    if source.depth_topic is not None:
        labels = FrameLabels(entry, f"depth topic {source.depth_topic}")
    anchors = None
    if source.anchor_topic is not None:
        anchors = FrameLabels(entry / ANCHOR_DIR, f"anchor topic {source.anchor_topic}")
    return BagFrames(entry, meta, source.focal, labels, anchors)
