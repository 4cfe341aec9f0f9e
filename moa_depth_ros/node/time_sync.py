"""Pair each image with the camera_info whose header stamp is closest (message_filters stand-in).

message_filters is not on PyPI (docs/ros.md), and its ApproximateTimeSynchronizer would also be
the wrong shape here: it emits pairs only when both streams produce one, so a camera_info stream
that stalls or runs slower than the images would stall depth output too. The node instead lets
the image drive:

* every camera_info goes into a small buffer of the most recently *received* messages
  (``add_info``), in any stamp order;
* when an image arrives the node calls ``match(image_stamp_ns)``, which returns the buffered
  camera_info with the closest stamp if it is within ``slop`` seconds (inclusive), else None;
* on None the node still publishes depth, just without a point cloud (and without a republished
  ``depth/camera_info``), because intrinsics for that frame are unknown.

A match does not consume the camera_info: intrinsics are per camera, not per frame, and one
camera_info may legitimately serve several images. Eviction is by arrival, not by stamp, so a
bag replayed in a loop (stamps jump back) recovers after ``queue_size`` new camera_infos instead
of holding on to stamps from the previous pass.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from moa_depth_ros.msgs.stamps import stamp_to_ns

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo

__all__ = ["ApproximateTimeSync"]


class ApproximateTimeSync:
    """Thread-safe lookup of the camera_info closest in stamp to an image (see module doc).

    Args:
        slop: largest accepted |image stamp − camera_info stamp|, seconds.
        queue_size: how many of the most recently received camera_infos to keep.
    """

    def __init__(self, slop: float = 0.1, queue_size: int = 10) -> None:
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._slop_ns = round(slop * 1e9)
        self._infos: deque[tuple[int, Any]] = deque(maxlen=queue_size)
        # Subscriptions may run in different callback groups of a MultiThreadedExecutor.
        self._lock = threading.Lock()

    def add_info(self, msg: CameraInfo) -> None:
        """Buffer a camera_info; the oldest received one is dropped when full."""
        self.add(stamp_to_ns(msg.header.stamp), msg)

    def add(self, stamp_ns: int, item: Any) -> None:
        """Buffer any item under ``stamp_ns`` (the node's metric anchors use it too)."""
        with self._lock:
            self._infos.append((stamp_ns, item))

    def match(self, stamp_ns: int) -> Any:
        """The buffered camera_info (item) closest to ``stamp_ns`` within slop, else None.

        Ties go to the most recently received message (the freshest intrinsics).
        """
        best: Any = None
        best_dt = self._slop_ns + 1
        with self._lock:
            for info_ns, msg in reversed(self._infos):
                dt = abs(info_ns - stamp_ns)
                if dt < best_dt:
                    best, best_dt = msg, dt
        return best

    def items(self) -> list[Any]:
        """The buffered items, oldest received first."""
        with self._lock:
            return [item for _, item in self._infos]

    def clear(self) -> None:
        """Forget all buffered camera_infos (e.g. on lifecycle deactivate)."""
        with self._lock:
            self._infos.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._infos)
