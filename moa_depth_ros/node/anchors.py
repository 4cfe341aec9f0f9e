"""Live metric anchoring for one camera: the metric inputs buffered by stamp, the fit applied
to each frame's depth, and what /diagnostics reports about it (docs/ros.md).

``metric_depth`` (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to the camera) and
``metric_points`` (sensor_msgs/PointCloud2 in the camera's optical frame) are decoded when they
arrive and buffered by header stamp. After inference the worker takes the ones within
``anchor_slop`` of the frame, fits the model's depth to them (``moa_depth_ros.anchoring``),
smooths the fit over time and applies it. Nothing waits for an anchor: a frame without a
usable one goes out with the last smoothed fit, and its outcome is counted. No rclpy here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from moa_depth_ros.anchoring import (
    FIT_OUTCOMES,
    AnchorFit,
    AnchorTracker,
    apply_anchor,
    points_to_depth,
)
from moa_depth_ros.geometry import CameraIntrinsics
from moa_depth_ros.msgs.image_codec import DEPTH_ENCODINGS, ImageDecodeError, image_msg_to_array
from moa_depth_ros.msgs.pointcloud import cloud_arrays
from moa_depth_ros.msgs.stamps import stamp_to_ns
from moa_depth_ros.node.time_sync import ApproximateTimeSync

if TYPE_CHECKING:
    from moa_depth_ros.node.params import NodeSettings

__all__ = ["ANCHOR_OUTCOMES", "AnchorSnapshot", "CameraAnchoring"]

#: What happened to each frame's anchoring (one per processed frame): a fit's outcome, or why
#: there was nothing to fit.
ANCHOR_OUTCOMES = FIT_OUTCOMES + (
    "missing",  # no anchor within anchor_slop of the frame
    "wrong_frame",  # anchors in another frame_id than the image's
    "no_camera_info",  # metric_points cannot be projected without intrinsics
)
#: Anchors kept per input (1 s at 30 Hz): they may arrive before or after their image.
ANCHOR_BUFFER = 30
#: Stamps of frames published without anchors, remembered to recognize an anchor as late.
UNANCHORED_MEMORY = 30


@dataclass(frozen=True)
class _Anchor:
    frame_id: str
    depth: np.ndarray | None = None  # H×W metres, NaN where the sensor has nothing
    points: np.ndarray | None = None  # N×3 metres in the optical frame


@dataclass(frozen=True)
class AnchorSnapshot:
    """Counters and the current fit, at one instant (for /diagnostics)."""

    mode: str
    received: int
    rejected: int
    last_reject_reason: str
    seconds_since_reject: float | None
    late: int
    outcomes: dict[str, int]
    applied: AnchorFit | None  # the smoothed fit being applied; None before the first one
    last: AnchorFit  # the latest frame's own fit
    problem: str  # why the latest frame was not anchored ('' when it was)

    def values(self) -> dict[str, str]:
        """/diagnostics key/value strings."""
        applied = self.applied
        values = {
            "anchor_mode": self.mode,
            "anchor_scale": "" if applied is None else _number(applied.scale),
            "anchor_shift": "" if applied is None else _number(applied.shift),
            "anchor_points": str(self.last.points),
            "anchor_residual": _number(self.last.residual),
            "anchors_received": str(self.received),
            "anchors_rejected": str(self.rejected),
            "anchors_late": str(self.late),
            "last_anchor_reject": self.last_reject_reason,
            "last_anchor_problem": self.problem,
        }
        values.update({f"anchor_frames_{k}": str(self.outcomes.get(k, 0)) for k in ANCHOR_OUTCOMES})
        return values


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


class CameraAnchoring:
    """One camera's anchor inputs, tracker and counters (see module doc).

    ``receive_depth`` / ``receive_points`` run in subscription callbacks; ``anchor`` in the
    inference worker. The buffers and counters are thread-safe; the tracker is the worker's.
    """

    def __init__(self, settings: NodeSettings) -> None:
        self.mode = settings.anchor_mode
        self._depths = ApproximateTimeSync(settings.anchor_slop, ANCHOR_BUFFER)
        self._points = ApproximateTimeSync(settings.anchor_slop, ANCHOR_BUFFER)
        self._slop_ns = round(settings.anchor_slop * 1e9)
        self._tracker = AnchorTracker(
            self.mode, settings.anchor_smoothing, settings.anchor_min_points,
            settings.anchor_max_residual,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._unanchored: deque[int] = deque(maxlen=UNANCHORED_MEMORY)
        self._received = 0
        self._rejected = 0
        self._last_reject = ""
        self._last_reject_time: float | None = None
        self._late = 0
        self._outcomes: Counter[str] = Counter()
        self._problem = ""

    # ------------------------------------------------------------------ inputs (callbacks)

    def receive_depth(self, msg: Any) -> str | None:
        """Buffer a metric_depth image; the reason when it is rejected (counted)."""
        try:
            if msg.encoding not in DEPTH_ENCODINGS:
                raise ImageDecodeError(
                    f"encoding '{msg.encoding}' is not a depth encoding (16UC1 mm or 32FC1 m)"
                )
            anchor = _Anchor(msg.header.frame_id, depth=image_msg_to_array(msg))
        except (ImageDecodeError, ValueError, AttributeError) as exc:
            return self._reject(f"metric_depth: {exc}")
        return self._buffer(self._depths, stamp_to_ns(msg.header.stamp), anchor)

    def receive_points(self, msg: Any) -> str | None:
        """Buffer a metric_points cloud; the reason when it is rejected (counted)."""
        try:
            xyz, _ = cloud_arrays(msg)
            anchor = _Anchor(msg.header.frame_id, points=xyz.reshape(-1, 3))
        except (ValueError, AttributeError, TypeError) as exc:
            return self._reject(f"metric_points: {exc}")
        return self._buffer(self._points, stamp_to_ns(msg.header.stamp), anchor)

    def _reject(self, reason: str) -> str:
        with self._lock:
            self._received += 1
            self._rejected += 1
            self._last_reject = reason
            self._last_reject_time = time.monotonic()
        return reason

    def _buffer(self, buffer: ApproximateTimeSync, stamp_ns: int, anchor: _Anchor) -> None:
        with self._lock:
            self._received += 1
            # An anchor for a frame already published without one: counted, and kept (the
            # sensor may be lagging only this once).
            late = [s for s in self._unanchored if abs(s - stamp_ns) <= self._slop_ns]
            if late:
                self._late += 1
                self._unanchored.remove(late[0])
        buffer.add(stamp_ns, anchor)

    # ------------------------------------------------------------------ per frame (worker)

    def anchor(
        self,
        depth: np.ndarray,
        frame_id: str,
        stamp_ns: int,
        intrinsics: CameraIntrinsics | None,
        settings: NodeSettings,
    ) -> np.ndarray:
        """``depth`` (H×W metres, clamped to the depth range) anchored to this frame's metric
        input when it has a usable one, else with the last smoothed fit."""
        self._tracker.smoothing = settings.anchor_smoothing
        self._tracker.min_points = settings.anchor_min_points
        self._tracker.max_residual = settings.anchor_max_residual
        metric, outcome, problem = self._metric_for(depth.shape, frame_id, stamp_ns, intrinsics)
        if metric is not None:
            fit = self._tracker.update(depth, metric)
            outcome = fit.outcome
            problem = "" if fit.stable else f"fit not used: {fit.reason}"
        with self._lock:
            self._outcomes[outcome] += 1
            self._problem = problem
            if outcome == "missing":
                self._unanchored.append(stamp_ns)
        fill_from = metric if settings.anchor_fill == "holes" else None
        out = apply_anchor(depth, self._tracker.current, fill_from, settings.anchor_fill)
        # Rescaled (or filled) depth stays inside the published range, as the model's does.
        return np.clip(out, settings.min_depth, settings.max_depth).astype(np.float32)

    def _metric_for(
        self,
        shape: tuple[int, ...],
        frame_id: str,
        stamp_ns: int,
        intrinsics: CameraIntrinsics | None,
    ) -> tuple[np.ndarray | None, str, str]:
        """(metric depth of the image's size or None, outcome, problem) for one frame."""
        height, width = shape
        found: _Anchor | None = self._depths.match(stamp_ns)
        cloud: _Anchor | None = self._points.match(stamp_ns)
        if found is None and cloud is None:
            return None, "missing", "no metric anchor within anchor_slop of the image stamp"
        layers = []
        problems: list[tuple[str, str]] = []
        for anchor in (found, cloud):
            if anchor is None:
                continue
            if anchor.frame_id != frame_id:
                reason = f"anchor frame_id '{anchor.frame_id}' is not the image's '{frame_id}'"
                problems.append(("wrong_frame", reason))
            elif anchor.depth is not None and anchor.depth.shape != (height, width):
                h, w = anchor.depth.shape[:2]
                reason = f"metric_depth is {w}x{h} but the image is {width}x{height}"
                problems.append(("wrong_size", reason))
            elif anchor.depth is not None:
                layers.append(anchor.depth)
            elif intrinsics is None:
                problems.append(("no_camera_info", "metric_points need the image's camera_info"))
            else:
                layers.append(points_to_depth(anchor.points, intrinsics, width, height))
        if not layers:
            outcome, problem = problems[0]
            return None, outcome, problem
        metric = layers[0]
        if len(layers) == 2:  # the depth image where it has depth, the cloud in its holes
            metric = np.where(np.isfinite(metric) & (metric > 0), metric, layers[1])
        return metric, "", ""

    # ------------------------------------------------------------------ diagnostics

    def snapshot(self) -> AnchorSnapshot:
        with self._lock:
            return AnchorSnapshot(
                mode=self.mode,
                received=self._received,
                rejected=self._rejected,
                last_reject_reason=self._last_reject,
                seconds_since_reject=None
                if self._last_reject_time is None
                else time.monotonic() - self._last_reject_time,
                late=self._late,
                outcomes=dict(self._outcomes),
                applied=self._tracker.current,
                last=self._tracker.last,
                problem=self._problem,
            )
