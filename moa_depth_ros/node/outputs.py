"""Which outputs a frame needs, and the messages for them (no node, no rclpy: testable alone).

The node's worker calls ``select_outputs`` with the current subscriber counts, runs the model
only if something is selected, then ``iter_outputs`` turns the depth map into messages that
all share the input image's header (stamp and optical frame_id, REP 103 / docs/ros.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, PointCloud2

from moa_depth_ros.geometry import depth_to_points
from moa_depth_ros.msgs.camera_info import camera_info_for_size, intrinsics_from_camera_info_msg
from moa_depth_ros.msgs.image_codec import array_to_image_msg, depth_to_image_msg
from moa_depth_ros.msgs.pointcloud import make_pointcloud2, pack_cloud
from moa_depth_ros.node.params import NodeSettings
from moa_depth_ros.visualize import colorize_depth, display_range

__all__ = [
    "DEPTH_CAMERA_INFO",
    "DEPTH_COLORIZED",
    "DEPTH_CONFIDENCE",
    "DEPTH_IMAGE",
    "DEPTH_POINTS",
    "OUTPUT_TOPICS",
    "Frame",
    "iter_outputs",
    "select_outputs",
]

DEPTH_IMAGE = "depth/image"
DEPTH_CAMERA_INFO = "depth/camera_info"
DEPTH_POINTS = "depth/points"
DEPTH_COLORIZED = "depth/colorized"
DEPTH_CONFIDENCE = "depth/confidence"
OUTPUT_TOPICS = (DEPTH_IMAGE, DEPTH_CAMERA_INFO, DEPTH_POINTS, DEPTH_COLORIZED, DEPTH_CONFIDENCE)


@dataclass(frozen=True)
class Frame:
    """A decoded input image waiting for inference.

    ``received`` is ``time.monotonic()`` when its message reached the subscription callback;
    ``camera_info`` the one matched by stamp at that moment, if it had already arrived.
    """

    rgb: np.ndarray
    header: Any
    stamp_ns: int
    received: float
    camera_info: CameraInfo | None = None


def select_outputs(settings: NodeSettings, subscriber_counts: Mapping[str, int]) -> frozenset[str]:
    """The output topics worth building for the next frame.

    Disabled outputs are never built; with ``skip_when_no_subscribers`` neither are outputs
    nobody subscribes to. An empty result means the frame needs no inference at all.
    """
    enabled = {
        DEPTH_IMAGE: True,
        DEPTH_CAMERA_INFO: True,
        DEPTH_POINTS: settings.publish_points,
        DEPTH_COLORIZED: settings.publish_colorized,
        DEPTH_CONFIDENCE: settings.publish_confidence,
    }
    return frozenset(
        topic
        for topic, on in enabled.items()
        if on and (not settings.skip_when_no_subscribers or subscriber_counts.get(topic, 0) > 0)
    )


def iter_outputs(
    selected: frozenset[str],
    frame: Frame,
    depth: np.ndarray,
    confidence: np.ndarray | None,
    camera_info: CameraInfo | None,
    settings: NodeSettings,
) -> Iterator[tuple[str, Any]]:
    """(topic, message) for the ``selected`` topics, built lazily in :data:`OUTPUT_TOPICS`
    order so the caller can publish depth before the slower cloud is built.

    ``depth`` is H×W float32 metres (NaN invalid) at the input resolution. Without
    ``camera_info`` there is no depth/camera_info and no cloud (intrinsics are unknown); without
    ``confidence`` (models with no bins) there is no depth/confidence.
    """
    header = frame.header
    height, width = depth.shape
    if DEPTH_IMAGE in selected:
        yield DEPTH_IMAGE, depth_to_image_msg(depth, header, settings.depth_encoding)
    if camera_info is not None and DEPTH_CAMERA_INFO in selected:
        yield DEPTH_CAMERA_INFO, camera_info_for_size(camera_info, header, width, height)
    if camera_info is not None and DEPTH_POINTS in selected:
        yield DEPTH_POINTS, _cloud(frame, depth, camera_info, settings)
    if DEPTH_COLORIZED in selected:
        low, high = settings.min_depth, settings.max_depth
        if settings.colorize_auto_range:
            # Per frame, robust: an indoor 0.7-4 m view uses the whole colour map instead of
            # the dark-blue end of 0.1-10 m. Every 4th pixel is plenty for two percentiles.
            low, high = display_range([depth], low, high, (2.0, 98.0), stride=4)
        bgr = colorize_depth(depth, low, high)
        yield DEPTH_COLORIZED, array_to_image_msg(bgr, header, "bgr8")
    if confidence is not None and DEPTH_CONFIDENCE in selected:
        conf = np.ascontiguousarray(confidence, dtype=np.float32)
        yield DEPTH_CONFIDENCE, array_to_image_msg(conf, header, "32FC1")


def _cloud(
    frame: Frame, depth: np.ndarray, camera_info: CameraInfo, settings: NodeSettings
) -> PointCloud2:
    step = settings.points_decimation
    points = depth_to_points(depth, intrinsics_from_camera_info_msg(camera_info), step)
    colour = frame.rgb[::step, ::step] if settings.points_rgb else None
    buffer, point_step, fields = pack_cloud(points, colour)
    rows, cols = points.shape[:2]
    return make_pointcloud2(frame.header, buffer, cols, rows, point_step, fields)
