"""One bag's colour frames with the depth registered to them, decoded into a folder.

Each bag (rosbag2 sqlite3 or MCAP, as a directory or a bare file, or ROS 1 ``.bag``; read by
``moa_depth_ros.bags.io.BagReader``) is read in two passes:

1. stamps: colour and depth messages are paired one to one by ``header.stamp`` within
   ``slop_ms`` (``moa_depth_ros.bags.pairing``), never by receive time, so a dropped frame
   stays unpaired instead of borrowing its neighbour; every ``stride``-th pair is kept. Without
   a depth topic (a teacher labels the frames) every ``stride``-th colour image is a frame. An
   anchor topic (sparse metric depth for a teacher's anchoring) is paired with the kept frames
   the same way; a frame without an anchor is still a frame;
2. decode: the kept frames (raw or compressed colour; 16UC1 mm or 32FC1 m depth and anchors,
   resized with nearest neighbour when only their resolution differs) are written as ``.npy``
   files: the frames (``images.npy``, ``stamps.npy``, ``valid.npy``), the depth topic's label
   set (``moa_depth_train.frame_labels``) and the anchors' (``anchor/``).

The focal length is the colour camera's fx in native pixels, from camera_info exactly as the
node reads it (``intrinsics_for_image``); training and the node both squash the whole frame
to the model input, so the focal length in model pixels is the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
from numpy.lib.format import open_memmap

from moa_depth_ros.bags.io import CAMERA_INFO, COMPRESSED, IMAGE, BagError, BagMessage, BagReader
from moa_depth_ros.bags.pairing import pair_by_stamp
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
from moa_depth_ros.progress import progress_bar
from moa_depth_train.bag_source import BagDataError, BagSource
from moa_depth_train.frame_labels import LabelWriter

__all__ = [
    "ANCHOR_DIR",
    "ANCHOR_PAIRED_FILE",
    "IMAGES_FILE",
    "STAMPS_FILE",
    "VALID_FILE",
    "decode_bag",
]

IMAGES_FILE, STAMPS_FILE, VALID_FILE = "images.npy", "stamps.npy", "valid.npy"
#: The anchor topic's maps: a label set (``frame_labels``) plus which slots got an anchor.
ANCHOR_DIR, ANCHOR_PAIRED_FILE = "anchor", "paired.npy"


def _decode_depth(reader: BagReader, message: BagMessage, size: tuple[int, int]) -> np.ndarray:
    """Metres at the colour ``size`` (h, w); invalid pixels as recorded (0 or NaN)."""
    msg = reader.decode(message)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageDecodeError(f"depth encoding '{msg.encoding}' is not 16UC1 or 32FC1")
    depth = image_msg_to_array(msg)
    if depth.shape != size:
        _check_depth_size(depth.shape, size, message.topic, reader.path)
        # Nearest: a registered depth image at another resolution; no depths are invented.
        depth = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return depth.astype(np.float32)


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
    """Pass 1: every stamp and the first message's size per topic, the first camera_info."""

    stamps: dict[str, list[int]]
    sizes: dict[str, tuple[int, int] | None]
    camera_info: Any = None


def _frame_topics(source: BagSource) -> list[str]:
    """The image topic, then the depth and anchor topics that are set (each once)."""
    topics = [source.image_topic]
    for topic in (source.depth_topic, source.anchor_topic):
        if topic is not None and topic not in topics:
            topics.append(topic)
    return topics


def _scan(reader: BagReader, source: BagSource, info_topic: str | None, progress: bool) -> _Scan:
    frame_topics = _frame_topics(source)
    scan = _Scan({t: [] for t in frame_topics}, {t: None for t in frame_topics})
    topics = [*frame_topics, *([info_topic] if info_topic else [])]
    present = reader.topics()
    total = sum(present[t].count for t in topics)
    bar = progress_bar(
        total=total, desc=f"scan {reader.path.name}", disable=not progress, leave=False
    )
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
        scan.stamps[message.topic].append(stamp)
        scan.sizes[message.topic] = scan.sizes[message.topic] or size
    bar.close()
    return scan


def _open_topics(reader: BagReader, source: BagSource) -> str | None:
    """Check the bag has what training needs; the camera_info topic to read (None: focal
    given and no camera_info recorded)."""
    if reader.summary().message_count == 0:
        raise BagDataError(f"bag '{reader.path}' is empty (no messages)")
    reader.require_topic(source.image_topic, (IMAGE, COMPRESSED))
    for topic in (source.depth_topic, source.anchor_topic):
        if topic is not None:
            reader.require_topic(topic, (IMAGE,))
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


def _frames(scan: _Scan, source: BagSource, bag: Path) -> tuple[list[tuple[int, int | None]], dict]:
    """The kept frames as (image index, depth index or None), in stamp order, and the counts:
    colour / depth pairs within the slop, or every colour image without a depth topic."""
    image_stamps = scan.stamps[source.image_topic]
    if not image_stamps:
        raise BagDataError(f"bag '{bag}' has no messages on {source.image_topic}")
    counts: dict[str, Any] = {"images": len(image_stamps)}
    if source.depth_topic is None:
        frames: list[tuple[int, int | None]] = [(i, None) for i in range(len(image_stamps))]
    else:
        frames = list(_depth_pairs(scan, source, bag, counts))
    # Stride over the frames in stamp order: evenly thinned frames of a high-rate camera.
    frames.sort(key=lambda p: image_stamps[p[0]])
    return frames[:: source.stride], counts


def _depth_pairs(
    scan: _Scan, source: BagSource, bag: Path, counts: dict[str, Any]
) -> list[tuple[int, int]]:
    image_stamps, depth_stamps = scan.stamps[source.image_topic], scan.stamps[source.depth_topic]
    if not depth_stamps:
        raise BagDataError(f"bag '{bag}' has no messages on {source.depth_topic}")
    pairs = pair_by_stamp(image_stamps, depth_stamps, round(source.slop_ms * 1e6))
    counts.update(
        depths=len(depth_stamps),
        pairs=len(pairs),
        unpaired_image=len(image_stamps) - len(pairs),
        unpaired_depth=len(depth_stamps) - len(pairs),
    )
    if not pairs:
        gap = _closest_gap(image_stamps, depth_stamps)
        raise BagDataError(
            f"bag '{bag}': no {source.image_topic} / {source.depth_topic} pairs within "
            f"data.slop_ms={source.slop_ms:g} ({counts['images']} images, {counts['depths']} "
            f"depth images; closest header stamps {gap / 1e6:.1f} ms apart)"
        )
    return pairs


def _anchor_slots(
    scan: _Scan, source: BagSource, frames: list[tuple[int, int | None]], bag: Path,
    counts: dict[str, Any],
) -> dict[int, int]:  # fmt: skip
    """Anchor message index → the kept frame's slot it pairs with (by stamp, one to one)."""
    if source.anchor_topic is None:
        return {}
    anchor_stamps = scan.stamps[source.anchor_topic]
    if not anchor_stamps:
        raise BagDataError(f"bag '{bag}' has no messages on {source.anchor_topic}")
    image_stamps = [scan.stamps[source.image_topic][i] for i, _ in frames]
    pairs = pair_by_stamp(image_stamps, anchor_stamps, round(source.slop_ms * 1e6))
    counts.update(anchors=len(anchor_stamps), frames_paired_with_anchor=len(pairs))
    return {j: slot for slot, j in pairs}


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


class _AnchorWriter:
    """The anchor topic's maps, a label set of their own (``anchor/``), and which slots got
    an anchor message (a frame with none is "missing" to the anchoring, not "too few")."""

    def __init__(self, directory: Path, count: int, size: tuple[int, int]) -> None:
        directory.mkdir()
        self.maps = LabelWriter(directory, count, size)
        self.paired = np.zeros(count, dtype=bool)
        self.directory = directory

    def __setitem__(self, slot: int, depth: np.ndarray) -> None:
        self.maps[slot] = depth
        self.paired[slot] = True

    def close(self) -> None:
        self.maps.close()
        np.save(self.directory / ANCHOR_PAIRED_FILE, self.paired)


def _decode_frames(
    reader: BagReader,
    source: BagSource,
    frames: list[tuple[int, int | None]],
    anchor_slots: dict[int, int],
    size: tuple[int, int],
    out: Path,
    counts: dict[str, Any],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pass 2: the kept frames' pixels into ``out``; which slots hold a whole frame (colour,
    and depth when there is a depth topic), and each slot's count of valid depth pixels."""
    image_slot = {i: k for k, (i, _) in enumerate(frames)}
    depth_slot = {j: k for k, (_, j) in enumerate(frames) if j is not None}
    images = open_memmap(out / IMAGES_FILE, "w+", np.uint8, (len(frames), *size, 3))
    labels = LabelWriter(out, len(frames), size) if source.depth_topic is not None else None
    anchors = _AnchorWriter(out / ANCHOR_DIR, len(frames), size) if anchor_slots else None
    filled = np.zeros((len(frames), 2), dtype=bool)
    filled[:, 1] = labels is None  # without a depth topic a frame is its colour image
    total = len(image_slot) + len(depth_slot) + len(anchor_slots)
    bar = progress_bar(total=total, desc=f"decode {reader.path.name}", disable=not progress)
    for message in reader.messages(_frame_topics(source)):
        # One topic may be both the depth and the anchor topic (a holey depth camera): its
        # message is decoded once for both.
        depth = None
        for role, slots in (("image", image_slot), ("depth", depth_slot),
                            ("anchor", anchor_slots)):  # fmt: skip
            if message.topic != getattr(source, f"{role}_topic"):
                continue
            slot = slots.get(message.index)
            if slot is None:
                continue
            try:
                if role == "image":
                    rgb = reader.decode_rgb(message)
                    if rgb.shape[:2] != size:
                        raise ImageDecodeError(f"image size changed to {rgb.shape[1::-1]}")
                    images[slot] = rgb
                else:
                    if depth is None:
                        depth = _decode_depth(reader, message, size)
                    (labels if role == "depth" else anchors)[slot] = depth
                if role != "anchor":
                    filled[slot, 0 if role == "image" else 1] = True
            except (ImageDecodeError, BagDataError) as exc:
                # One broken frame (or a size change mid-bag) drops that frame, counted; a
                # broken anchor leaves its frame without one.
                counts.setdefault("first_problem", f"{message.topic}: {one_line(exc)}")
            bar.update(1)
    bar.close()
    images.flush()
    del images  # closes the map before the folder is renamed
    for writer in (labels, anchors):
        if writer is not None:
            writer.close()
    if anchors is not None:
        counts["frames_with_anchor"] = int(anchors.paired.sum())
    return filled.all(axis=1), None if labels is None else labels.valid_pixels


def decode_bag(path: Path, source: BagSource, out: Path, progress: bool) -> dict[str, Any]:
    """Both passes over one bag, writing the frames, the depth topic's labels and the anchor
    topic's maps into ``out``; the metadata (counts, sizes, fx)."""
    with BagReader(path) as reader:
        info_topic = _open_topics(reader, source)
        scan = _scan(reader, source, info_topic, progress)
        frames, counts = _frames(scan, source, path)
        anchor_slots = _anchor_slots(scan, source, frames, path, counts)
        size = scan.sizes[source.image_topic]
        for topic in (source.depth_topic, source.anchor_topic):
            if topic is not None:
                _check_depth_size(scan.sizes[topic], size, topic, path)
        fx = _camera_fx(scan.camera_info, size, info_topic, source.focal, path)
        valid, valid_pixels = _decode_frames(
            reader, source, frames, anchor_slots, size, out, counts, progress
        )
    counts["undecodable"] = int(len(frames) - valid.sum())
    counts["frames"] = int(valid.sum())
    if valid_pixels is not None:
        counts["frames_with_depth"] = int((valid & (valid_pixels > 0)).sum())
    if not valid.any():
        what = "pairs" if source.depth_topic is not None else "images"
        raise BagDataError(
            f"bag '{path}': none of its {len(frames)} {what} could be decoded "
            f"({counts.get('first_problem', 'unknown problem')})"
        )
    np.save(out / VALID_FILE, valid)
    stamps = scan.stamps[source.image_topic]
    np.save(out / STAMPS_FILE, np.array([stamps[i] for i, _ in frames], np.int64))
    return {"height": size[0], "width": size[1], "camera_info_fx": fx, "counts": counts}
