"""Live metric anchoring for one camera: the metric inputs decoded off the executor and buffered
by stamp, the core's fit applied to each frame's depth, and what /diagnostics reports about it
(docs/anchoring.md).

``metric_depth`` (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to the camera) and
``metric_points`` (sensor_msgs/PointCloud2 in the camera's optical frame) are only queued by
the subscription callbacks; a decoder thread decodes them and buffers by header stamp only what
anchoring needs: a depth image of the camera's size (another size is remembered as just its
size), a cloud's x, y, z thinned to ``anchor_max_points``. After inference the worker takes the
anchors within ``anchor_slop`` of the frame and hands them to the one anchoring implementation
(``moa_depth_ros.anchoring.AnchorTracker``, shared with bag evaluation). Nothing waits for an
anchor: a frame without a usable one goes out with the last smoothed fit, and its outcome is
counted and logged (once per kind per ``LOG_PERIOD_S``). No rclpy here.

A relative model is anchored in inverse depth (``space='inverse_depth'``); until its first good
fit a frame has nothing metric to publish (``anchor`` returns None). A prompt-depth model uses
the same inputs, pairing and counters, but before inference: ``prompt_for`` gives the frame's
metric depth as the model's prompt (outcome ``prompted``), or None (the frame is withheld).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from moa_depth_ros.anchoring import (
    ANCHOR_OUTCOMES,
    AnchorFit,
    AnchorSettings,
    AnchorTracker,
    anchor_mask,
    depth_prompt,
    points_to_depth,
)
from moa_depth_ros.errors import one_line
from moa_depth_ros.geometry import CameraIntrinsics
from moa_depth_ros.msgs.image_codec import DEPTH_ENCODINGS, ImageDecodeError, image_msg_to_array
from moa_depth_ros.msgs.pointcloud import cloud_xyz
from moa_depth_ros.msgs.stamps import stamp_to_ns
from moa_depth_ros.node.time_sync import ApproximateTimeSync

if TYPE_CHECKING:
    from moa_depth_ros.node.params import NodeSettings

__all__ = ["AnchorSnapshot", "CameraAnchoring"]

#: Anchors kept per input (1 s at 30 Hz): they may arrive before or after their image.
ANCHOR_BUFFER = 30
#: Stamps of frames published without anchors, remembered to recognize an anchor as late.
UNANCHORED_MEMORY = 30
#: Anchor messages waiting for the decoder; when full, the oldest is dropped (counted).
DECODE_QUEUE = 4
#: An image whose stamp is this far (s) from the newest anchor of a live sensor: the two are
#: on different clocks (sim time vs wall time, an unsynchronized LiDAR), counted as far_off.
FAR_OFF_S = 2.0
#: A sensor whose newest anchor arrived this recently (s) is live: far from the image's stamp
#: it is far_off, not missing (a sensor slower than 1 Hz, or one that stopped, is missing).
LIVE_SENSOR_S = 1.0
#: Default: one log line per kind of anchoring problem per this many seconds.
LOG_PERIOD_S = 5.0


@dataclass(frozen=True)
class _Anchor:
    frame_id: str
    depth: np.ndarray | None = None  # H×W metres, NaN where the sensor has nothing
    points: np.ndarray | None = None  # N×3 float32 metres in the optical frame
    size: tuple[int, int] | None = None  # (h, w) of a depth image not kept: not the camera's
    #: A cloud projected on arrival (``depth`` then holds it): the intrinsics it was projected
    #: with; a frame with others projects ``points`` afresh (kept only while there are none).
    projected_with: CameraIntrinsics | None = None


@dataclass(frozen=True)
class AnchorSnapshot:
    """Counters and the current fit, at one instant (for /diagnostics)."""

    mode: str
    received: int
    rejected: int
    last_reject_reason: str
    seconds_since_reject: float | None
    late: int
    dropped: int  # anchor messages dropped because the decoder was behind
    points_dropped: int  # cloud points beyond anchor_max_points
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
            "anchors_dropped": str(self.dropped),
            "anchor_points_dropped": str(self.points_dropped),
            "last_anchor_reject": self.last_reject_reason,
            "last_anchor_problem": self.problem,
        }
        values.update({f"anchor_frames_{k}": str(self.outcomes.get(k, 0)) for k in ANCHOR_OUTCOMES})
        return values


def _at_size(
    intrinsics: CameraIntrinsics | None, width: int, height: int
) -> CameraIntrinsics | None:
    return None if intrinsics is None else intrinsics.scaled(width, height)


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


class _RateLimit:
    """True once per ``period`` seconds per kind."""

    def __init__(self, period: float, clock: Callable[[], float]) -> None:
        self.period, self.clock = period, clock
        self._last: dict[str, float] = {}

    def allow(self, kind: str) -> bool:
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            return False
        self._last[kind] = now
        return True


class CameraAnchoring:
    """One camera's anchor inputs, decoder, tracker and counters (see module doc).

    ``receive_depth`` / ``receive_points`` run in subscription callbacks and only queue the
    message; a daemon thread decodes it (``drain`` waits for it, ``close`` stops it);
    ``anchor`` runs in the inference worker. ``log`` gets one line per kind of problem per
    ``log_period`` seconds (the node passes its ROS logger's warning).
    """

    def __init__(
        self,
        settings: NodeSettings,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_period: float = LOG_PERIOD_S,
        space: str = "depth",
        prompt: bool = False,
    ) -> None:
        #: What /diagnostics calls it: the fit's mode, or the prompt a prompt model takes.
        self.mode = "depth_prompt" if prompt else settings.anchor_mode
        self.space = space
        self._max_points = settings.anchor_max_points
        self._slop = settings.anchor_slop
        self._slop_ns = round(settings.anchor_slop * 1e9)
        self._depths = ApproximateTimeSync(settings.anchor_slop, ANCHOR_BUFFER)
        self._points = ApproximateTimeSync(settings.anchor_slop, ANCHOR_BUFFER)
        self._fit_built_from: NodeSettings | None = None
        self._fit: AnchorSettings | None = None
        # A prompt model fits nothing: no tracker (and no fit settings to check).
        self._tracker = None if prompt else AnchorTracker(self._fit_settings(settings))
        self._log = log
        self._clock = clock
        self._limit = _RateLimit(log_period, clock)
        self._lock = threading.Lock()
        self._unanchored: deque[int] = deque(maxlen=UNANCHORED_MEMORY)
        self._received = 0
        self._rejected = 0
        self._last_reject = ""
        self._last_reject_time: float | None = None
        self._late = 0
        self._dropped = 0
        self._points_dropped = 0
        self._outcomes: Counter[str] = Counter()
        self._problem = ""
        self._image_size: tuple[int, int] | None = None  # (h, w) of the latest frame
        #: The latest frame's intrinsics at its size: the decoder projects clouds with them.
        self._intrinsics: CameraIntrinsics | None = None
        self._newest: tuple[float, int] | None = None  # (clock, stamp) of the newest anchor
        # The decoder: its queue, and whether it is working on one (for drain).
        self._wake = threading.Condition(self._lock)
        self._queue: deque[tuple[str, Any]] = deque()
        self._busy = False
        self._closed = False
        self._decoder = threading.Thread(
            target=self._decode_loop, name="anchor-decoder", daemon=True
        )
        self._decoder.start()

    # ------------------------------------------------------------------ inputs (callbacks)

    def receive_depth(self, msg: Any) -> None:
        """Queue a metric_depth image for the decoder (never blocks)."""
        self._enqueue("metric_depth", msg)

    def receive_points(self, msg: Any) -> None:
        """Queue a metric_points cloud for the decoder (never blocks)."""
        self._enqueue("metric_points", msg)

    def _enqueue(self, kind: str, msg: Any) -> None:
        with self._wake:
            self._received += 1
            dropped = len(self._queue) >= DECODE_QUEUE
            if dropped:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((kind, msg))
            self._wake.notify()
        if dropped:
            self._warn("dropped", f"the anchor decoder is behind: dropped the oldest of "
                       f"{DECODE_QUEUE} queued anchor messages")  # fmt: skip

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued anchor is decoded and buffered; False on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        """Stop the decoder (queued messages are dropped); idempotent."""
        with self._wake:
            self._closed = True
            self._queue.clear()
            self._wake.notify_all()
        if self._decoder is not threading.current_thread():
            self._decoder.join(timeout=5.0)

    def _decode_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    self._busy = False
                    self._wake.notify_all()
                    return
                kind, msg = self._queue.popleft()
                self._busy = True
            try:
                self._decode(kind, msg)
            except Exception as exc:  # noqa: BLE001 - a bad anchor never stops the decoder
                self._reject(kind, f"{kind}: {one_line(exc)}")
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _decode(self, kind: str, msg: Any) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        frame_id = str(msg.header.frame_id)
        if kind == "metric_depth":
            if msg.encoding not in DEPTH_ENCODINGS:
                raise ImageDecodeError(
                    f"encoding '{msg.encoding}' is not a depth encoding (16UC1 mm or 32FC1 m)"
                )
            size = (int(msg.height), int(msg.width))
            if self._image_size is not None and size != self._image_size:
                anchor = _Anchor(frame_id, size=size)  # it cannot anchor these frames
            else:
                anchor = _Anchor(frame_id, depth=image_msg_to_array(msg))
            self._buffer(self._depths, stamp_ns, anchor)
            return
        xyz, total = cloud_xyz(msg, self._max_points)
        dropped = total - len(xyz)
        xyz = xyz[np.isfinite(xyz).all(axis=1) & (xyz[:, 2] > 0)]  # behind or invalid: no use
        if dropped:
            with self._lock:
                self._points_dropped += dropped
            self._warn("thinned", f"metric_points: a cloud of {total} points was thinned to "
                       f"{total - dropped} (anchor_max_points {self._max_points})")  # fmt: skip
        with self._lock:
            intrinsics = self._intrinsics
        if intrinsics is None:  # before the first frame's camera_info: projected when used
            anchor = _Anchor(frame_id, points=xyz)
        else:  # projected once, here: the sparse depth is all anchoring needs of a cloud
            depth = points_to_depth(xyz, intrinsics, intrinsics.width, intrinsics.height)
            anchor = _Anchor(frame_id, depth=depth, projected_with=intrinsics)
        self._buffer(self._points, stamp_ns, anchor)

    def _reject(self, kind: str, reason: str) -> None:
        with self._lock:
            self._rejected += 1
            self._last_reject = reason
            self._last_reject_time = self._clock()
        self._warn(f"rejected {kind}", f"rejected an anchor message: {reason}")

    def _buffer(self, buffer: ApproximateTimeSync, stamp_ns: int, anchor: _Anchor) -> None:
        with self._lock:
            self._newest = (self._clock(), stamp_ns)
            # An anchor for a frame already published without one: counted, and kept (the
            # sensor may be lagging only this once).
            late = [s for s in self._unanchored if abs(s - stamp_ns) <= self._slop_ns]
            if late:
                self._late += 1
                self._unanchored.remove(late[0])
        buffer.add(stamp_ns, anchor)

    def _warn(self, kind: str, text: str) -> None:
        if self._log is not None and self._limit.allow(kind):
            self._log(text)

    # ------------------------------------------------------------------ per frame (worker)

    def _fit_settings(self, settings: NodeSettings) -> AnchorSettings:
        """The core's settings for ``settings``, built (and checked) once per parameter change,
        not per frame: the node replaces its NodeSettings whole on each accepted change."""
        if settings is not self._fit_built_from:
            self._fit = settings.anchor_settings(self.space)
            self._fit_built_from = settings
        return self._fit

    def anchor(
        self,
        depth: np.ndarray,
        frame_id: str,
        stamp_ns: int,
        intrinsics: CameraIntrinsics | None,
        settings: NodeSettings,
    ) -> np.ndarray | None:
        """``depth`` (H×W metres clamped to the depth range, or a relative model's output)
        anchored to this frame's metric input when it has a usable one, else with the last
        smoothed fit; None when there is nothing metric to publish (a relative model before
        its first good fit)."""
        if self._tracker is None:
            raise RuntimeError("a prompt model's camera is not anchored after inference")
        self._remember(depth.shape[:2], intrinsics)
        anchor_settings = self._fit_settings(settings)
        metric, absent = self._metric_for(depth.shape, frame_id, stamp_ns, intrinsics,
                                          anchor_settings.depth_range)  # fmt: skip
        frame = self._tracker.anchor(depth, metric, anchor_settings, absent)
        self._record(frame.outcome, frame.problem, stamp_ns)
        return frame.depth

    def prompt_for(
        self,
        image_hw: tuple[int, int],
        frame_id: str,
        stamp_ns: int,
        intrinsics: CameraIntrinsics | None,
        settings: NodeSettings,
    ) -> np.ndarray | None:
        """A prompt model's input for this frame: its metric depth (H×W metres, NaN where the
        sensor has nothing), or None when it has none (counted and logged like an anchor)."""
        self._remember(image_hw, intrinsics)
        depth_range = (settings.min_depth, settings.max_depth)
        metric, (outcome, problem) = self._metric_for(
            image_hw, frame_id, stamp_ns, intrinsics, depth_range
        )
        if metric is not None:
            metric, _ = depth_prompt(metric, depth_range)
            outcome, problem = (
                ("prompted", "")
                if metric is not None
                else ("too_few_points", "the metric depth has no valid pixel")
            )
        self._record(outcome, problem and f"no depth prompt: {problem}", stamp_ns)
        return metric

    def _remember(self, image_hw: tuple[int, ...], intrinsics: CameraIntrinsics | None) -> None:
        """The frame's size and intrinsics, for the decoder (what to keep, how to project)."""
        with self._lock:
            self._image_size = (int(image_hw[0]), int(image_hw[1]))
            if intrinsics is not None:
                self._intrinsics = intrinsics.scaled(image_hw[1], image_hw[0])

    def _record(self, outcome: str, problem: str, stamp_ns: int) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            self._problem = problem
            if outcome in ("missing", "far_off"):
                self._unanchored.append(stamp_ns)
        if problem:
            self._warn(outcome, f"not anchored ({outcome}): {problem}")

    def _metric_for(
        self,
        shape: tuple[int, ...],
        frame_id: str,
        stamp_ns: int,
        intrinsics: CameraIntrinsics | None,
        depth_range: tuple[float, float],
    ) -> tuple[np.ndarray | None, tuple[str, str]]:
        """(metric depth of the image's size or None, (outcome, problem) when None)."""
        height, width = shape[:2]
        found: _Anchor | None = self._depths.match(stamp_ns)
        cloud: _Anchor | None = self._points.match(stamp_ns)
        if found is None and cloud is None:
            return None, self._absent(stamp_ns)
        layers = []
        problems: list[tuple[str, str]] = []
        for anchor in (found, cloud):
            if anchor is None:
                continue
            size = anchor.size or (None if anchor.depth is None else anchor.depth.shape[:2])
            if anchor.frame_id != frame_id:
                reason = f"anchor frame_id '{anchor.frame_id}' is not the image's '{frame_id}'"
                problems.append(("wrong_frame", reason))
            elif size is not None and size != (height, width):
                reason = f"metric_depth is {size[1]}x{size[0]} but the image is {width}x{height}"
                problems.append(("wrong_size", reason))
            elif anchor.projected_with is not None and anchor.projected_with == _at_size(
                intrinsics, width, height
            ):
                layers.append(anchor.depth)
            elif anchor.projected_with is not None:
                reason = "metric_points were projected with other intrinsics than the image's"
                problems.append(("no_camera_info", reason))
            elif anchor.depth is not None:
                layers.append(anchor.depth)
            elif intrinsics is None:
                problems.append(("no_camera_info", "metric_points need the image's camera_info"))
            else:
                layers.append(points_to_depth(anchor.points, intrinsics, width, height))
        if not layers:
            return None, problems[0]
        metric = layers[0]
        if len(layers) == 2:  # the depth image where it has depth, the cloud in its holes
            metric = np.where(anchor_mask(metric, depth_range), metric, layers[1])
        return metric, ("", "")

    def _absent(self, stamp_ns: int) -> tuple[str, str]:
        """Why no anchor matched: far_off when a live sensor's newest stamp is far from the
        image's (another clock), else missing."""
        with self._lock:
            newest = self._newest
        if newest is not None and self._clock() - newest[0] <= LIVE_SENSOR_S:
            offset = (newest[1] - stamp_ns) / 1e9
            if abs(offset) > FAR_OFF_S:
                return "far_off", (
                    f"the newest anchor's stamp is {offset:+.3f} s from the image's: the sensor "
                    "and the camera are on different clocks?"
                )
        return "missing", f"no metric anchor within anchor_slop of the image stamp ({self._slop} s)"

    # ------------------------------------------------------------------ diagnostics

    def buffered_bytes(self) -> int:
        """Bytes of anchor data held in the stamp buffers (what memory anchoring keeps)."""
        total = 0
        for buffer in (self._depths, self._points):
            for anchor in buffer.items():
                for array in (anchor.depth, anchor.points):
                    total += 0 if array is None else array.nbytes
        return total

    def snapshot(self) -> AnchorSnapshot:
        with self._lock:
            return AnchorSnapshot(
                mode=self.mode,
                received=self._received,
                rejected=self._rejected,
                last_reject_reason=self._last_reject,
                seconds_since_reject=None
                if self._last_reject_time is None
                else self._clock() - self._last_reject_time,
                late=self._late,
                dropped=self._dropped,
                points_dropped=self._points_dropped,
                outcomes=dict(self._outcomes),
                applied=None if self._tracker is None else self._tracker.current,
                last=AnchorFit.identity() if self._tracker is None else self._tracker.last,
                problem=self._problem,
            )
