"""A rosbag's colour frames with the depth registered to them, decoded once into a disk cache.

Each bag (rosbag2 sqlite3 or MCAP, as a directory or a bare file, or ROS 1 ``.bag``; read by
``moa_depth_ros.bags.io.BagReader``) is read in two passes:

1. stamps: colour and depth messages are paired one to one by ``header.stamp`` within
   ``slop_ms`` (``moa_depth_ros.bags.pairing``), never by receive time, so a dropped frame
   stays unpaired instead of borrowing its neighbour; every ``stride``-th pair is kept;
2. decode: the kept pairs (raw or compressed colour; 16UC1 mm or 32FC1 m depth, resized with
   nearest neighbour when only its resolution differs) go into a disk cache of ``.npy`` files
   that every later run and DataLoader worker memory-maps, so no epoch decodes the bag again.

The focal length is the colour camera's fx in native pixels, from camera_info exactly as the
node reads it (``intrinsics_for_image``); training and the node both squash the whole frame
to the model input, so the focal length in model pixels is the same in both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from moa_depth_ros.bags.io import CAMERA_INFO, COMPRESSED, IMAGE, BagError, BagMessage, BagReader
from moa_depth_ros.bags.pairing import pair_by_stamp
from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.geometry import CAMERA_INFO_ASPECT_TOLERANCE, intrinsics_for_image, same_aspect
from moa_depth_ros.msgs.camera_info import intrinsics_from_camera_info_msg
from moa_depth_ros.msgs.image_codec import (
    DEPTH_ENCODINGS,
    ImageDecodeError,
    encoded_image_size,
    image_msg_to_array,
)
from moa_depth_ros.msgs.stamps import header_stamp_ns

__all__ = [
    "BagDataError",
    "BagFrames",
    "BagSource",
    "bag_fingerprint",
    "default_cache_dir",
    "load_bag",
    "sibling_camera_info",
]

#: Bumped whenever what the cache holds changes, so old caches are not read.
CACHE_VERSION = 1


class BagDataError(ValueError):
    """A bag that cannot be trained on (missing topics, no pairs, sizes); one line."""


def sibling_camera_info(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport's convention):
    ``/camera/image_raw`` and ``/camera/image_raw/compressed`` → ``/camera/camera_info``."""
    base = image_topic.removesuffix("/compressed").rstrip("/")
    parent = base.rsplit("/", 1)[0] if "/" in base else ""
    return f"{parent}/camera_info"


@dataclass(frozen=True)
class BagSource:
    """Which topics of a bag to train on and how to pair them (the ``data.*`` bag keys)."""

    image_topic: str
    depth_topic: str
    camera_info_topic: str | None = None  # None: the image topic's sibling camera_info
    focal: float | None = None  # px of the native image; overrides camera_info
    slop_ms: float = 20.0
    stride: int = 1

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> BagSource:
        for key in ("image_topic", "depth_topic"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise BagDataError(f"data.{key} must name a topic for data.type: bag")
        if data["image_topic"] == data["depth_topic"]:
            raise BagDataError(
                f"data.image_topic and data.depth_topic are both {data['image_topic']}"
            )
        stride, slop, focal = data["stride"], data["slop_ms"], data["focal"]
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise BagDataError(f"data.stride must be an integer >= 1, got {stride!r}")
        if not isinstance(slop, (int, float)) or not slop >= 0:
            raise BagDataError(f"data.slop_ms must be >= 0, got {slop!r}")
        if focal is not None and not (isinstance(focal, (int, float)) and 0 < focal < 1e6):
            raise BagDataError(f"data.focal must be a focal length in pixels > 0, got {focal!r}")
        return cls(
            data["image_topic"],
            data["depth_topic"],
            data["camera_info_topic"],
            None if focal is None else float(focal),
            float(slop),
            stride,
        )

    @property
    def info_topic(self) -> str:
        return self.camera_info_topic or sibling_camera_info(self.image_topic)

    def cache_key(self) -> dict[str, Any]:
        """What decides the cached frames (focal is applied when loading, not cached)."""
        return {"version": CACHE_VERSION, **asdict(self), "focal": None, "info": self.info_topic}


# ---------------------------------------------------------------------------- fingerprint


def _bag_files(path: Path) -> list[Path]:
    """The files a bag consists of: itself, or every file under its directory."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    raise BagDataError(f"bag '{path}' does not exist")


def _file_sha256(path: Path, memo: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        memo[key] = file_sha256(path)
    return memo[key]


def bag_fingerprint(path: str | Path, memo_file: Path | None = None) -> dict[str, Any]:
    """``{"name", "bytes", "sha256"}`` of a bag: a file's own SHA-256 (what ``sha256sum``
    prints); a directory's over ``"<relative name> <sha256>\\n"`` of its files in name order.

    ``memo_file`` (JSON) remembers file hashes by path, size and mtime, so a run on a
    multi-gigabyte bag that has not changed does not read it all again just to hash it.
    """
    path = Path(path)
    files = _bag_files(path)
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}  # a damaged memo only costs a re-hash
    before = dict(memo)
    if path.is_file():
        digest = _file_sha256(path, memo)
    else:
        lines = "".join(f"{f.relative_to(path)} {_file_sha256(f, memo)}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    if memo_file is not None and memo != before:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True))
        tmp.replace(memo_file)
    return {"name": path.name, "bytes": sum(f.stat().st_size for f in files), "sha256": digest}


# ---------------------------------------------------------------------------- decoding


def _decode_depth(reader: BagReader, message: BagMessage, size: tuple[int, int]) -> np.ndarray:
    """Metres at the colour ``size`` (h, w), 0 where invalid (NaN, 0, negative, infinite)."""
    msg = reader.decode(message)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageDecodeError(f"depth encoding '{msg.encoding}' is not 16UC1 or 32FC1")
    depth = image_msg_to_array(msg)
    if depth.shape != size:
        _check_depth_size(depth.shape, size, message.topic, reader.path)
        # Nearest: a registered depth image at another resolution; no depths are invented.
        depth = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)


def _check_depth_size(
    depth: tuple[int, ...], image: tuple[int, ...], topic: str, bag: Path
) -> None:
    if not same_aspect(depth, image, CAMERA_INFO_ASPECT_TOLERANCE):
        raise BagDataError(
            f"bag '{bag}': depth on {topic} is {depth[1]}x{depth[0]} but the colour image is "
            f"{image[1]}x{image[0]} (another aspect ratio: depth must be registered to the "
            "colour camera)"
        )


def _message_size(reader: BagReader, message: BagMessage) -> tuple[int, int]:
    """(h, w) of an image message without decoding its pixels."""
    msg = reader.decode(message)
    if message.msgtype == COMPRESSED:
        _, width, height = encoded_image_size(np.frombuffer(msg.data, dtype=np.uint8))
        return height, width
    return int(msg.height), int(msg.width)


@dataclass
class _Scan:
    """Pass 1: every stamp, the first message's size per topic, the first camera_info."""

    image_stamps: list[int]
    depth_stamps: list[int]
    image_size: tuple[int, int] | None = None
    depth_size: tuple[int, int] | None = None
    camera_info: Any = None


def _scan(reader: BagReader, source: BagSource, info_topic: str | None, progress: bool) -> _Scan:
    scan = _Scan([], [])
    topics = [source.image_topic, source.depth_topic, *([info_topic] if info_topic else [])]
    present = reader.topics()
    total = sum(present[t].count for t in topics)
    bar = tqdm(total=total, desc=f"scan {reader.path.name}", disable=not progress, leave=False)
    for message in reader.messages(topics):
        bar.update(1)
        if message.topic == info_topic:
            if scan.camera_info is None:
                scan.camera_info = reader.decode(message)
            continue
        try:
            stamp = header_stamp_ns(reader.decode(message))
            size = _message_size(reader, message) if message.index == 0 else None
        except ImageDecodeError as exc:
            raise BagDataError(f"bag '{reader.path}': {message.topic}: {one_line(exc)}") from exc
        if message.topic == source.image_topic:
            scan.image_stamps.append(stamp)
            scan.image_size = scan.image_size or size
        else:
            scan.depth_stamps.append(stamp)
            scan.depth_size = scan.depth_size or size
    bar.close()
    return scan


def _open_topics(reader: BagReader, source: BagSource) -> str | None:
    """Check the bag has what training needs; the camera_info topic to read (None: focal
    given and no camera_info recorded)."""
    if reader.summary().message_count == 0:
        raise BagDataError(f"bag '{reader.path}' is empty (no messages)")
    reader.require_topic(source.image_topic, (IMAGE, COMPRESSED))
    reader.require_topic(source.depth_topic, (IMAGE,))
    if source.focal is not None and source.info_topic not in reader.topics():
        return None
    try:
        reader.require_topic(source.info_topic, (CAMERA_INFO,))
    except BagError as exc:
        raise BagDataError(f"{one_line(exc)} (or set data.focal, in pixels)") from exc
    return source.info_topic


def _closest_gap(left: list[int], right: list[int]) -> int:
    """The smallest |left - right| stamp difference (ns), for the no-pairs message."""
    right_sorted = np.sort(np.asarray(right, dtype=np.int64))
    stamps = np.asarray(left, dtype=np.int64)
    pos = np.searchsorted(right_sorted, stamps)
    below = right_sorted[np.clip(pos - 1, 0, len(right_sorted) - 1)]
    above = right_sorted[np.clip(pos, 0, len(right_sorted) - 1)]
    return int(np.minimum(np.abs(stamps - below), np.abs(stamps - above)).min())


def _pairs(scan: _Scan, source: BagSource, bag: Path) -> tuple[list[tuple[int, int]], dict]:
    for topic, stamps in ((source.image_topic, scan.image_stamps),
                          (source.depth_topic, scan.depth_stamps)):  # fmt: skip
        if not stamps:
            raise BagDataError(f"bag '{bag}' has no messages on {topic}")
    pairs = pair_by_stamp(scan.image_stamps, scan.depth_stamps, round(source.slop_ms * 1e6))
    counts = {
        "images": len(scan.image_stamps),
        "depths": len(scan.depth_stamps),
        "pairs": len(pairs),
        "unpaired_image": len(scan.image_stamps) - len(pairs),
        "unpaired_depth": len(scan.depth_stamps) - len(pairs),
    }
    if not pairs:
        gap = _closest_gap(scan.image_stamps, scan.depth_stamps)
        raise BagDataError(
            f"bag '{bag}': no {source.image_topic} / {source.depth_topic} pairs within "
            f"data.slop_ms={source.slop_ms:g} ({counts['images']} images, {counts['depths']} "
            f"depth images; closest header stamps {gap / 1e6:.1f} ms apart)"
        )
    # Stride over the pairs in stamp order: evenly thinned frames of a high-rate camera.
    pairs.sort(key=lambda p: scan.image_stamps[p[0]])
    return pairs[:: source.stride], counts


def _camera_fx(
    camera_info: Any, size: tuple[int, int], topic: str | None, focal: float | None, bag: Path
) -> float | None:
    """fx of the colour image as the node derives it from camera_info; None when there is
    none (or it is unusable) and ``focal`` is given instead."""
    if camera_info is None:
        if focal is None:
            raise BagDataError(f"bag '{bag}' has no message on {topic}; set data.focal (pixels)")
        return None
    if not hasattr(camera_info, "k"):  # ROS 1 names the matrices D, K, R, P
        fields = ("width", "height", "binning_x", "binning_y", "roi")
        camera_info = SimpleNamespace(
            k=camera_info.K, p=camera_info.P, **{f: getattr(camera_info, f) for f in fields}
        )
    try:
        intrinsics = intrinsics_from_camera_info_msg(camera_info)
        return intrinsics_for_image(intrinsics, size[1], size[0]).fx
    except ValueError as exc:
        if focal is not None:
            return None
        raise BagDataError(
            f"bag '{bag}': camera_info on {topic} is unusable ({one_line(exc)}); "
            "set data.focal (pixels) instead"
        ) from exc


def _decode_bag(path: Path, source: BagSource, out: Path, progress: bool) -> dict[str, Any]:
    """Both passes over one bag, writing images.npy, depth.npy, stamps.npy, valid.npy into
    ``out``; the metadata (counts, sizes, fx)."""
    from numpy.lib.format import open_memmap

    with BagReader(path) as reader:
        info_topic = _open_topics(reader, source)
        scan = _scan(reader, source, info_topic, progress)
        pairs, counts = _pairs(scan, source, path)
        size = scan.image_size
        _check_depth_size(scan.depth_size, size, source.depth_topic, path)
        fx = _camera_fx(scan.camera_info, size, info_topic, source.focal, path)
        image_slot = {i: k for k, (i, _) in enumerate(pairs)}
        depth_slot = {j: k for k, (_, j) in enumerate(pairs)}
        frames = len(pairs)
        images = open_memmap(out / "images.npy", "w+", np.uint8, (frames, *size, 3))
        depths = open_memmap(out / "depth.npy", "w+", np.float32, (frames, *size))
        filled = np.zeros((frames, 2), dtype=bool)
        bar = tqdm(total=2 * frames, desc=f"decode {path.name}", disable=not progress)
        for message in reader.messages([source.image_topic, source.depth_topic]):
            is_image = message.topic == source.image_topic
            slot = (image_slot if is_image else depth_slot).get(message.index)
            if slot is None:
                continue
            try:
                if is_image:
                    rgb = reader.decode_rgb(message)
                    if rgb.shape[:2] != size:
                        raise ImageDecodeError(f"image size changed to {rgb.shape[1::-1]}")
                    images[slot] = rgb
                else:
                    depths[slot] = _decode_depth(reader, message, size)
                filled[slot, 0 if is_image else 1] = True
            except (ImageDecodeError, BagDataError) as exc:
                # One broken frame (or a size change mid-bag) drops that frame, counted.
                counts.setdefault("first_problem", f"{message.topic}: {one_line(exc)}")
            bar.update(1)
        bar.close()
        images.flush()
        depths.flush()
        del images, depths  # closes the maps before the directory is renamed
    valid = filled.all(axis=1)
    counts["undecodable"] = int(frames - valid.sum())
    counts["frames"] = int(valid.sum())
    if not valid.any():
        raise BagDataError(
            f"bag '{path}': none of its {frames} pairs could be decoded "
            f"({counts.get('first_problem', 'unknown problem')})"
        )
    np.save(out / "valid.npy", valid)
    np.save(out / "stamps.npy", np.array([scan.image_stamps[i] for i, _ in pairs], np.int64))
    return {"height": size[0], "width": size[1], "camera_info_fx": fx, "counts": counts}


# ---------------------------------------------------------------------------- cache


class BagFrames:
    """One bag's decoded frames in the cache, memory-mapped (opened lazily in each process)."""

    def __init__(self, directory: Path, meta: dict[str, Any], focal: float | None) -> None:
        self.directory, self.meta = directory, meta
        self.name: str = meta["bag"]["name"]
        self.focal = focal if focal is not None else meta["camera_info_fx"]
        valid = np.load(directory / "valid.npy")
        self.frames = np.flatnonzero(valid)  # cache slots that hold a whole pair
        self.stamps = np.load(directory / "stamps.npy")[self.frames]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __getstate__(self) -> dict:
        # DataLoader workers map the files themselves (pickling a memmap copies its data).
        return {**self.__dict__, "_arrays": None}

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``'s RGB and depth, copied out of the (read-only) map."""
        if self._arrays is None:
            self._arrays = tuple(
                np.load(self.directory / name, mmap_mode="r")
                for name in ("images.npy", "depth.npy")
            )
        slot = self.frames[index]
        return np.array(self._arrays[0][slot]), np.array(self._arrays[1][slot])

    def record(self) -> dict[str, Any]:
        """The bag and what was taken from it (JSON; for checkpoint metadata)."""
        return {**self.meta["bag"], **self.meta["counts"]}

    def summary(self) -> str:
        c = self.meta["counts"]
        line = (
            f"bag {self.name}: {c['pairs']} pairs within {self.meta['source']['slop_ms']:g} ms "
            f"({c['unpaired_image']} images and {c['unpaired_depth']} depth images unpaired)"
        )
        if self.meta["source"]["stride"] > 1:
            line += f", stride {self.meta['source']['stride']}"
        if c["undecodable"]:
            line += f", {c['undecodable']} undecodable ({c['first_problem']})"
        return f"{line}: {len(self)} frames {self.meta['width']}x{self.meta['height']}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moa_depth_ros/bags"


def load_bag(
    path: str | Path, source: BagSource, cache_dir: Path, progress: bool = True
) -> BagFrames:
    """The bag's frames from the cache, decoding the bag into it first when it is not there.

    The cache entry is keyed by the bag's SHA-256 and ``source`` (topics, slop, stride), and
    appears under its name only once complete (written beside it, then renamed), so an
    interrupted decode never leaves a cache that later runs would trust.
    """
    path = Path(path)
    if not path.exists():
        raise BagDataError(f"bag '{path}' does not exist")
    bag = bag_fingerprint(path, cache_dir / "sha256.json")
    key_text = json.dumps({"bag": bag["sha256"], **source.cache_key()}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    entry = cache_dir / f"{path.name}-{key}"
    if not (entry / "meta.json").is_file():
        tmp = cache_dir / f".{entry.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            meta = _decode_bag(path, source, tmp, progress)
            meta.update(version=CACHE_VERSION, bag=bag, source=source.cache_key())
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                tmp.rename(entry)
            except OSError:
                if not (entry / "meta.json").is_file():  # not just another process first
                    raise
        except BagError as exc:
            raise BagDataError(one_line(exc)) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((entry / "meta.json").read_text())
    if source.focal is None and meta["camera_info_fx"] is None:
        raise BagDataError(f"bag '{path}' has no camera_info; set data.focal (pixels)")
    return BagFrames(entry, meta, source.focal)
