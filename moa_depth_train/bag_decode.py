"""One bag's colour frames with the depth registered to them, decoded into a folder.

Each bag (rosbag2 sqlite3 or MCAP, as a directory or a bare file, or ROS 1 ``.bag``; read by
``moa_depth_ros.bags.io.BagReader``) is read in two passes:

1. stamps: colour and depth messages are paired one to one by ``header.stamp`` within
   ``slop_ms`` (``moa_depth_ros.bags.pairing``), never by receive time, so a dropped frame
   stays unpaired instead of borrowing its neighbour; every ``stride``-th pair is kept;
2. decode: the kept pairs (raw or compressed colour; 16UC1 mm or 32FC1 m depth, resized with
   nearest neighbour when only its resolution differs) are written as ``.npy`` files: the
   frames (``images.npy``, ``stamps.npy``, ``valid.npy``) and the depth topic's label set
   (``moa_depth_train.frame_labels``).

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

__all__ = ["IMAGES_FILE", "STAMPS_FILE", "VALID_FILE", "decode_bag"]

IMAGES_FILE, STAMPS_FILE, VALID_FILE = "images.npy", "stamps.npy", "valid.npy"


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


def _decode_pairs(
    reader: BagReader,
    source: BagSource,
    pairs: list[tuple[int, int]],
    size: tuple[int, int],
    out: Path,
    counts: dict[str, Any],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: the kept pairs' pixels into ``out``; which slots hold a whole pair, and each
    slot's count of valid depth pixels."""
    image_slot = {i: k for k, (i, _) in enumerate(pairs)}
    depth_slot = {j: k for k, (_, j) in enumerate(pairs)}
    images = open_memmap(out / IMAGES_FILE, "w+", np.uint8, (len(pairs), *size, 3))
    labels = LabelWriter(out, len(pairs), size)
    filled = np.zeros((len(pairs), 2), dtype=bool)
    bar = progress_bar(
        total=2 * len(pairs), desc=f"decode {reader.path.name}", disable=not progress
    )
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
                labels[slot] = _decode_depth(reader, message, size)
            filled[slot, 0 if is_image else 1] = True
        except (ImageDecodeError, BagDataError) as exc:
            # One broken frame (or a size change mid-bag) drops that frame, counted.
            counts.setdefault("first_problem", f"{message.topic}: {one_line(exc)}")
        bar.update(1)
    bar.close()
    images.flush()
    del images  # closes the map before the folder is renamed
    labels.close()
    return filled.all(axis=1), labels.valid_pixels


def decode_bag(path: Path, source: BagSource, out: Path, progress: bool) -> dict[str, Any]:
    """Both passes over one bag, writing the frames and the depth topic's labels into
    ``out``; the metadata (counts, sizes, fx)."""
    with BagReader(path) as reader:
        info_topic = _open_topics(reader, source)
        scan = _scan(reader, source, info_topic, progress)
        pairs, counts = _pairs(scan, source, path)
        size = scan.image_size
        _check_depth_size(scan.depth_size, size, source.depth_topic, path)
        fx = _camera_fx(scan.camera_info, size, info_topic, source.focal, path)
        valid, valid_pixels = _decode_pairs(reader, source, pairs, size, out, counts, progress)
    counts["undecodable"] = int(len(pairs) - valid.sum())
    counts["frames"] = int(valid.sum())
    counts["frames_with_depth"] = int((valid & (valid_pixels > 0)).sum())
    if not valid.any():
        raise BagDataError(
            f"bag '{path}': none of its {len(pairs)} pairs could be decoded "
            f"({counts.get('first_problem', 'unknown problem')})"
        )
    np.save(out / VALID_FILE, valid)
    np.save(out / STAMPS_FILE, np.array([scan.image_stamps[i] for i, _ in pairs], np.int64))
    return {"height": size[0], "width": size[1], "camera_info_fx": fx, "counts": counts}
