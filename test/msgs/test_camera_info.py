"""CameraInfo messages ↔ intrinsics: duck-typed reading, copying or scaling to a depth size."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from ros_helpers import frames
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from moa_depth_ros.geometry import CameraIntrinsics
from moa_depth_ros.msgs.camera_info import camera_info_for_size, intrinsics_from_camera_info_msg


def _k(fx, fy, cx, cy):
    return [fx, 0, cx, 0, fy, cy, 0, 0, 1]


def _p(fx, fy, cx, cy):
    return [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0]


def test_camera_info_msg_is_duck_typed():
    msg = SimpleNamespace(
        width=640,
        height=480,
        k=np.array(_k(1, 1, 1, 1)),
        p=np.array(_p(500, 400, 320, 240)),
        binning_x=0,
        binning_y=2,
        roi=SimpleNamespace(x_offset=0, y_offset=40, width=640, height=400),
    )
    # cy' = (240 - 40)/2, height 400/2.
    assert intrinsics_from_camera_info_msg(msg) == CameraIntrinsics(
        500.0, 200.0, 320.0, 100.0, 640, 200
    )


def test_camera_info_is_copied_or_scaled_to_the_depth_size() -> None:
    info = frames.camera_info(5, 640, 480)
    header = Header(frame_id="other")
    same = camera_info_for_size(info, header, 640, 480)
    assert same.header.frame_id == "other" and (same.width, same.height) == (640, 480)
    np.testing.assert_array_equal(same.k, info.k)
    np.testing.assert_array_equal(same.p, info.p)
    half = camera_info_for_size(info, header, 320, 240)
    fx, fy, cx, cy = frames.intrinsics(640, 480)
    assert (half.width, half.height) == (320, 240)
    np.testing.assert_allclose(half.k[[0, 2, 4, 5]], [fx / 2, cx / 2, fy / 2, cy / 2])
    np.testing.assert_allclose(half.p[[0, 2, 5, 6]], [fx / 2, cx / 2, fy / 2, cy / 2])
    # A ROI crop of 320x240 at (100, 50) published as 160x120: offset removed, then halved.
    info.roi = RegionOfInterest(x_offset=100, y_offset=50, width=320, height=240)
    crop = camera_info_for_size(info, header, 160, 120)
    np.testing.assert_allclose(crop.k[[2, 5]], [(cx - 100) / 2, (cy - 50) / 2])
    assert crop.roi.width == 0 and crop.binning_x == 0
