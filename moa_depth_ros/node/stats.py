"""Counters, rates and latency percentiles of the depth node (plain Python, no ROS).

The node's callbacks and its inference worker run in different threads; ``NodeStats`` is the
one place they report to, and ``snapshot()`` gives the diagnostics timer a consistent copy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LatencyWindow", "NodeStats", "RateMeter", "StatsSnapshot", "percentile"]

Clock = Callable[[], float]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class RateMeter:
    """Events per second over the last ``window_s`` seconds (not thread-safe on its own).

    Until a full window has passed since construction or ``reset``, the rate is taken over the
    time elapsed so far, so it is meaningful within the first second of a stream.
    """

    def __init__(self, window_s: float = 5.0, clock: Clock = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self._window = window_s
        self._clock = clock
        self._events: deque[float] = deque()
        self._start = clock()

    def tick(self) -> None:
        self._events.append(self._clock())

    def rate(self) -> float:
        now = self._clock()
        while self._events and self._events[0] <= now - self._window:
            self._events.popleft()
        span = min(self._window, now - self._start)
        return len(self._events) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._events.clear()
        self._start = self._clock()


class LatencyWindow:
    """The last ``size`` durations (seconds) with p50/p95 (not thread-safe on its own)."""

    def __init__(self, size: int = 256) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentile_ms(self, q: float) -> float | None:
        value = percentile(list(self._values), q)
        return None if value is None else 1e3 * value

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class StatsSnapshot:
    """Everything /diagnostics reports about traffic and timing, at one instant.

    Latencies are milliseconds over the most recent frames (None before the first frame), all
    measured from the message's arrival in the subscription callback: ``queue_wait`` until
    inference starts (decode + time in its frame slot), ``first_output`` until the first output
    (normally depth/image) is published, ``processing`` until the last one is. ``inference`` is
    the estimator's own ``timings["total"]``.
    """

    messages_received: int
    messages_rejected: int
    last_reject_reason: str
    seconds_since_reject: float | None
    frames_dropped: int
    frames_published: int
    frames_skipped_no_subscribers: int
    #: Frames with no metric depth to publish: a relative model before its first good anchor
    #: fit, or a prompt model without a depth prompt (the anchoring counters say which).
    frames_withheld: int
    inference_errors: int
    last_inference_error: str
    seconds_since_inference_error: float | None
    camera_info_missing: int
    camera_info_missing_now: bool
    camera_info_rejected: int
    transitions_refused: int
    last_transition_refused: str
    last_camera_info_reject: str
    seconds_since_camera_info_reject: float | None
    input_rate_hz: float
    output_rate_hz: float
    camera_info_rate_hz: float
    inference_ms_p50: float | None
    inference_ms_p95: float | None
    queue_wait_ms_p50: float | None
    first_output_ms_p50: float | None
    processing_ms_p50: float | None
    processing_ms_p95: float | None


class NodeStats:
    """Thread-safe counters and timing windows reported by the callbacks and the worker."""

    def __init__(
        self, rate_window_s: float = 5.0, latency_window: int = 512, clock: Clock = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._received = 0
        self._rejected = 0
        self._last_reject_reason = ""
        self._last_reject_time: float | None = None
        self._dropped = 0
        self._published = 0
        self._skipped = 0
        self._withheld = 0
        self._errors = 0
        self._last_error = ""
        self._last_error_time: float | None = None
        self._info_missing = 0
        self._info_missing_now = False
        self._info_rejected = 0
        self._transitions_refused = 0
        self._last_transition_refused = ""
        self._last_info_reject = ""
        self._last_info_reject_time: float | None = None
        self._input_rate = RateMeter(rate_window_s, clock)
        self._output_rate = RateMeter(rate_window_s, clock)
        self._info_rate = RateMeter(rate_window_s, clock)
        self._inference = LatencyWindow(latency_window)
        self._queue_wait = LatencyWindow(latency_window)
        self._first_output = LatencyWindow(latency_window)
        self._processing = LatencyWindow(latency_window)

    def message_received(self) -> None:
        """An image message arrived (before decoding: rejected ones count too)."""
        with self._lock:
            self._received += 1
            self._input_rate.tick()

    def camera_info_received(self) -> None:
        with self._lock:
            self._info_rate.tick()

    def message_rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected += 1
            self._last_reject_reason = reason
            self._last_reject_time = self._clock()

    def frame_dropped(self) -> None:
        """A decoded frame was replaced in its frame slot before the worker took it."""
        with self._lock:
            self._dropped += 1

    def frame_skipped(self) -> None:
        """A frame got no inference because no output had a subscriber."""
        with self._lock:
            self._skipped += 1

    def frame_withheld(self) -> None:
        """A frame had no metric depth to publish (``StatsSnapshot.frames_withheld``)."""
        with self._lock:
            self._withheld += 1

    def camera_info_matched(self, matched: bool) -> bool:
        """Record whether a processed frame had camera_info; True when it just went missing."""
        with self._lock:
            started_missing = not matched and not self._info_missing_now
            if not matched:
                self._info_missing += 1
            self._info_missing_now = not matched
            return started_missing

    def camera_info_rejected(self, reason: str) -> None:
        """A matched camera_info did not fit its image (size, aspect, unusable intrinsics)."""
        with self._lock:
            self._info_rejected += 1
            self._last_info_reject = reason
            self._last_info_reject_time = self._clock()

    def transition_refused(self, reason: str) -> None:
        """A lifecycle transition the current state does not have was requested."""
        with self._lock:
            self._transitions_refused += 1
            self._last_transition_refused = reason

    def inference_failed(self, reason: str) -> None:
        with self._lock:
            self._errors += 1
            self._last_error = reason
            self._last_error_time = self._clock()

    def frame_published(
        self, inference_s: float, queue_wait_s: float, first_output_s: float, processing_s: float
    ) -> None:
        """A frame's outputs went out; durations in seconds (see ``StatsSnapshot``)."""
        with self._lock:
            self._published += 1
            self._output_rate.tick()
            self._inference.add(inference_s)
            self._queue_wait.add(queue_wait_s)
            self._first_output.add(first_output_s)
            self._processing.add(processing_s)

    def restart_windows(self) -> None:
        """Forget rates and latencies, keep the counters (on activation: an inactive period or
        an earlier configuration must not colour the figures of the new one)."""
        with self._lock:
            self._input_rate.reset()
            self._output_rate.reset()
            self._info_rate.reset()
            for window in (self._inference, self._queue_wait, self._first_output, self._processing):
                window.clear()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = self._clock()
            return StatsSnapshot(
                messages_received=self._received,
                messages_rejected=self._rejected,
                last_reject_reason=self._last_reject_reason,
                seconds_since_reject=_since(now, self._last_reject_time),
                frames_dropped=self._dropped,
                frames_published=self._published,
                frames_skipped_no_subscribers=self._skipped,
                frames_withheld=self._withheld,
                inference_errors=self._errors,
                last_inference_error=self._last_error,
                seconds_since_inference_error=_since(now, self._last_error_time),
                camera_info_missing=self._info_missing,
                camera_info_missing_now=self._info_missing_now,
                camera_info_rejected=self._info_rejected,
                transitions_refused=self._transitions_refused,
                last_transition_refused=self._last_transition_refused,
                last_camera_info_reject=self._last_info_reject,
                seconds_since_camera_info_reject=_since(now, self._last_info_reject_time),
                input_rate_hz=self._input_rate.rate(),
                output_rate_hz=self._output_rate.rate(),
                camera_info_rate_hz=self._info_rate.rate(),
                inference_ms_p50=self._inference.percentile_ms(50),
                inference_ms_p95=self._inference.percentile_ms(95),
                queue_wait_ms_p50=self._queue_wait.percentile_ms(50),
                first_output_ms_p50=self._first_output.percentile_ms(50),
                processing_ms_p50=self._processing.percentile_ms(50),
                processing_ms_p95=self._processing.percentile_ms(95),
            )


def _since(now: float, then: float | None) -> float | None:
    return None if then is None else now - then
