"""Wrap a packed point buffer in an organized ``sensor_msgs/PointCloud2``.

The packing itself (x, y, z and optional rgb, NaN for invalid pixels) is done without ROS by
``moa_depth_ros.geometry.pack_cloud``; this module only adds the message around its output.
The cloud is organized like depth_image_proc's (ros.md §2): ``height``/``width`` are the pixel
grid, ``is_dense`` is False because invalid pixels are NaN points, and the data is little-endian.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from moa_depth_ros.ros.image_codec import set_uint8_data

__all__ = ["FIELD_SIZES", "make_pointcloud2"]

#: Bytes per element for each sensor_msgs/PointField datatype constant.
FIELD_SIZES: dict[int, int] = {
    PointField.INT8: 1,
    PointField.UINT8: 1,
    PointField.INT16: 2,
    PointField.UINT16: 2,
    PointField.INT32: 4,
    PointField.UINT32: 4,
    PointField.FLOAT32: 4,
    PointField.FLOAT64: 8,
}


def _point_field(name: str, offset: int, datatype: int, count: int, point_step: int) -> PointField:
    size = FIELD_SIZES.get(datatype)
    if size is None:
        raise ValueError(f"field '{name}': unknown PointField datatype {datatype}")
    if offset < 0 or count < 1 or offset + size * count > point_step:
        raise ValueError(
            f"field '{name}' (offset {offset}, {count} x {size} B) does not fit in "
            f"point_step {point_step}"
        )
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def make_pointcloud2(
    header: Any,
    buffer: np.ndarray,
    width: int,
    height: int,
    point_step: int,
    fields: Iterable[tuple[str, int, int, int]],
) -> PointCloud2:
    """Build an organized, little-endian PointCloud2 from a packed point buffer.

    Args:
        header: copied by reference into the message (stamp and optical frame of the image).
        buffer: C-contiguous array holding exactly width·height·point_step bytes, row-major
            over the pixel grid (normally flat uint8 from ``geometry.pack_cloud``).
        width, height: the grid (the possibly decimated depth image).
        point_step: bytes per point.
        fields: ``(name, offset, datatype, count)`` tuples, datatype a PointField constant.

    Raises:
        ValueError: sizes that disagree or a field that does not fit in ``point_step``.
    """
    if width < 1 or height < 1 or point_step < 1:
        raise ValueError(
            f"cloud needs positive sizes, got {width}x{height} points of {point_step} B"
        )
    buffer = np.asarray(buffer)
    expected = width * height * point_step
    if buffer.nbytes != expected:
        raise ValueError(
            f"buffer has {buffer.nbytes} bytes, expected width*height*point_step = "
            f"{width}*{height}*{point_step} = {expected}"
        )
    msg = PointCloud2()
    msg.header = header
    msg.height = height
    msg.width = width
    msg.fields = [_point_field(*field, point_step) for field in fields]
    msg.is_bigendian = False  # pack_cloud writes little-endian (PCL PointXYZRGB layout)
    msg.point_step = point_step
    msg.row_step = width * point_step
    msg.is_dense = False  # invalid pixels are NaN points
    set_uint8_data(msg, buffer)
    return msg
