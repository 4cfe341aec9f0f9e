"""``sensor_msgs/CameraInfo`` ↔ pinhole intrinsics (REP 104 binning and ROI).

Reading works on rclpy and rosbags messages alike (duck-typed fields); the maths is
``geometry.intrinsics_from_camera_info``. Writing (:func:`camera_info_for_size`) builds rclpy
messages, so ``sensor_msgs`` is imported only there.
"""

from __future__ import annotations

from typing import Any

from moa_depth_ros.geometry import CameraIntrinsics, intrinsics_from_camera_info

__all__ = ["camera_info_for_size", "intrinsics_from_camera_info_msg"]


def intrinsics_from_camera_info_msg(msg: Any) -> CameraIntrinsics:
    """``intrinsics_from_camera_info`` of a sensor_msgs/CameraInfo (rclpy or rosbags)."""
    roi = msg.roi
    return intrinsics_from_camera_info(
        msg.width,
        msg.height,
        msg.k,
        msg.p,
        binning_x=msg.binning_x,
        binning_y=msg.binning_y,
        roi_x_offset=roi.x_offset,
        roi_y_offset=roi.y_offset,
        roi_width=roi.width,
        roi_height=roi.height,
    )


def camera_info_for_size(info: Any, header: Any, width: int, height: int) -> Any:
    """``info`` restamped with ``header`` and describing a ``width``×``height`` image.

    When the image ``info`` describes (after its binning and ROI, REP 104) already has that
    size, everything is copied unchanged so consumers such as depth_image_proc read it exactly
    as the camera published it. Otherwise the image was resized upstream: K and P are scaled
    per axis as image_proc's ResizeNode does (after undoing the ROI offset), and the result
    has no binning and no ROI.

    Raises:
        ValueError: ``info`` has no usable intrinsics.
    """
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    described = intrinsics_from_camera_info_msg(info)
    out = CameraInfo(
        header=header,
        distortion_model=info.distortion_model,
        d=list(info.d),
        r=list(info.r),
    )
    if (described.width, described.height) == (width, height):
        out.width, out.height = info.width, info.height
        out.k, out.p = list(info.k), list(info.p)
        out.binning_x, out.binning_y = info.binning_x, info.binning_y
        out.roi = info.roi
        return out
    roi = info.roi
    full_roi = (roi.x_offset, roi.y_offset, roi.width, roi.height) == (0, 0, 0, 0)
    roi_width = info.width if full_roi else roi.width
    roi_height = info.height if full_roi else roi.height
    sx, sy = width / roi_width, height / roi_height
    out.width, out.height = width, height
    out.k = _scaled_matrix(info.k, 3, sx, sy, roi.x_offset, roi.y_offset)
    out.p = _scaled_matrix(info.p, 4, sx, sy, roi.x_offset, roi.y_offset)
    out.binning_x = out.binning_y = 0
    out.roi = RegionOfInterest()
    return out


def _scaled_matrix(
    matrix: Any, cols: int, sx: float, sy: float, x_offset: int, y_offset: int
) -> list[float]:
    """Row-major K (3×3) or P (3×4) of the cropped-then-resized image.

    Binning needs no separate term: sx = output width / ROI width already includes it.
    """
    m = [float(v) for v in matrix]
    m[0] *= sx  # fx
    m[2] = (m[2] - x_offset) * sx  # cx
    m[cols + 1] *= sy  # fy
    m[cols + 2] = (m[cols + 2] - y_offset) * sy  # cy
    if cols == 4:
        m[3] *= sx  # Tx = -fx'·baseline scales with fx
        m[7] *= sy
    return m
