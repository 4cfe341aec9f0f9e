"""The depth node's /diagnostics status (diagnostic_updater is not on PyPI, docs/ros.md).

``assess`` decides level and summary from a stats snapshot (plain Python, unit-testable);
``diagnostic_values`` flattens the snapshot into key/value strings; ``diagnostic_array`` wraps
both in the ``diagnostic_msgs/DiagnosticArray`` the node publishes once a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from moa_depth_ros.node.stats import StatsSnapshot

if TYPE_CHECKING:
    from moa_depth_ros.node.anchors import AnchorSnapshot

__all__ = ["Level", "assess", "assess_anchoring", "diagnostic_array", "diagnostic_values"]

#: A rejection or inference error this recent (seconds) keeps the status at WARN, so a single
#: bad message is visible for a few diagnostics periods instead of one.
RECENT_S = 5.0
#: Images arriving at less than this share of the camera_info rate (which is small and always
#: gets through) means images are being lost on the way: large messages over default FastDDS.
IMAGE_LOSS_RATIO = 0.5
MIN_CAMERA_INFO_RATE_HZ = 2.0
FRAME_LOSS_HINT = (
    "large images are being lost in transport: load the large shared-memory profile on every "
    "process, the camera's publisher too (export FASTDDS_DEFAULT_PROFILES_FILE=<share>/"
    "moa_depth_ros/config/fastdds_large_shm.xml), or subscribe to image/compressed"
)


class Level(IntEnum):
    OK = 0
    WARN = 1
    ERROR = 2


def assess(
    snapshot: StatsSnapshot, state: str, configure_error: str = "", recent_s: float = RECENT_S
) -> tuple[Level, str]:
    """(level, one-line summary) for the node in lifecycle ``state``.

    ERROR when the node has no model (not configured, or configure failed); WARN when inputs
    were recently rejected, inference recently failed, or the last frame had no camera_info;
    OK otherwise (inactive is an intended lifecycle state, so it is OK too).
    """
    if state in ("unconfigured", "finalized", "errorprocessing") or configure_error:
        if configure_error:
            return Level.ERROR, f"not configured: {configure_error}"
        return Level.ERROR, f"not configured (lifecycle state '{state}')"
    if state != "active":
        return Level.OK, f"{state}: not subscribed to images"
    problems = []
    if _recent(snapshot.seconds_since_inference_error, recent_s):
        problems.append(f"inference failing: {snapshot.last_inference_error}")
    if _recent(snapshot.seconds_since_reject, recent_s):
        problems.append(f"rejecting input: {snapshot.last_reject_reason}")
    if _recent(snapshot.seconds_since_camera_info_reject, recent_s):
        problems.append(f"camera_info rejected: {snapshot.last_camera_info_reject}")
    if (
        snapshot.camera_info_rate_hz >= MIN_CAMERA_INFO_RATE_HZ
        and snapshot.input_rate_hz < IMAGE_LOSS_RATIO * snapshot.camera_info_rate_hz
    ):
        problems.append(
            f"images arrive at {snapshot.input_rate_hz:.1f} Hz but camera_info at "
            f"{snapshot.camera_info_rate_hz:.1f} Hz: {FRAME_LOSS_HINT}"
        )
    if snapshot.camera_info_missing_now:
        problems.append("no camera_info matching the images: publishing depth without clouds")
    if problems:
        return Level.WARN, "; ".join(problems)
    if snapshot.frames_published == 0:
        return Level.OK, "active, waiting for images"
    return Level.OK, "active"


def assess_anchoring(
    anchoring: AnchorSnapshot, state: str, level: Level, message: str, recent_s: float = RECENT_S
) -> tuple[Level, str]:
    """``assess``'s (level, message) with the anchoring problems added: WARN when the last
    frame was not anchored or anchors were rejected recently (an active node only: before
    that there are no frames)."""
    problems = []
    if anchoring.problem:
        problems.append(f"not anchored: {anchoring.problem}")
    if _recent(anchoring.seconds_since_reject, recent_s):
        problems.append(f"rejecting anchors: {anchoring.last_reject_reason}")
    if state != "active" or not problems or level == Level.ERROR:
        return level, message
    if level == Level.OK:
        return Level.WARN, "; ".join(problems)
    return level, "; ".join([message, *problems])


def _recent(seconds_since: float | None, recent_s: float) -> bool:
    return seconds_since is not None and seconds_since < recent_s


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def diagnostic_values(
    snapshot: StatsSnapshot,
    *,
    state: str,
    device: str,
    model_type: str,
    backend: str = "",
    precision: str = "",
) -> dict[str, str]:
    """Key/value strings of the status; latencies in ms ('' before the first frame)."""
    return {
        "lifecycle_state": state,
        "device": device,
        "model_type": model_type,
        "backend": backend,
        "precision": precision,
        "input_rate_hz": f"{snapshot.input_rate_hz:.2f}",
        "output_rate_hz": f"{snapshot.output_rate_hz:.2f}",
        "camera_info_rate_hz": f"{snapshot.camera_info_rate_hz:.2f}",
        "inference_latency_p50_ms": _ms(snapshot.inference_ms_p50),
        "inference_latency_p95_ms": _ms(snapshot.inference_ms_p95),
        "queue_wait_p50_ms": _ms(snapshot.queue_wait_ms_p50),
        "first_output_latency_p50_ms": _ms(snapshot.first_output_ms_p50),
        "processing_latency_p50_ms": _ms(snapshot.processing_ms_p50),
        "processing_latency_p95_ms": _ms(snapshot.processing_ms_p95),
        "messages_received": str(snapshot.messages_received),
        "messages_rejected": str(snapshot.messages_rejected),
        "last_reject_reason": snapshot.last_reject_reason,
        "frames_dropped": str(snapshot.frames_dropped),
        "frames_published": str(snapshot.frames_published),
        "frames_skipped_no_subscribers": str(snapshot.frames_skipped_no_subscribers),
        "frames_withheld": str(snapshot.frames_withheld),
        "inference_errors": str(snapshot.inference_errors),
        "last_inference_error": snapshot.last_inference_error,
        "camera_info_missing": str(snapshot.camera_info_missing),
        "camera_info_rejected": str(snapshot.camera_info_rejected),
        "transitions_refused": str(snapshot.transitions_refused),
        "last_transition_refused": snapshot.last_transition_refused,
        "last_camera_info_reject": snapshot.last_camera_info_reject,
    }


_LEVEL_BYTES = {
    Level.OK: DiagnosticStatus.OK,
    Level.WARN: DiagnosticStatus.WARN,
    Level.ERROR: DiagnosticStatus.ERROR,
}


def diagnostic_array(
    stamp: Any,
    hardware_id: str,
    statuses: list[tuple[str, Level, str, Mapping[str, str]]],
) -> DiagnosticArray:
    """DiagnosticArray of (name, level, message, values) statuses (``stamp``: a
    builtin_interfaces/Time)."""
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [
        DiagnosticStatus(
            level=_LEVEL_BYTES[level],
            name=name,
            message=message,
            hardware_id=hardware_id,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        for name, level, message, values in statuses
    ]
    return array
