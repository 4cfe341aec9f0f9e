"""``sensor_msgs/PointCloud2`` ↔ numpy: wrap a packed point buffer, and read any cloud back.

Building: the packing itself (x, y, z and optional rgb, NaN for invalid pixels) is done without
ROS by ``moa_depth_ros.geometry.pack_cloud``; :func:`make_pointcloud2` only adds the message
around its output. The cloud is organized like depth_image_proc's (docs/ros.md): ``height`` /
``width`` are the pixel grid, ``is_dense`` is False because invalid pixels are NaN points, and
the data is little-endian. ``sensor_msgs`` is imported only there, so reading works offline.

Reading: :func:`cloud_arrays` is the inverse of ``pack_cloud`` for any field layout (rclpy or
rosbags messages): a structured dtype is built from the message's own ``fields``,
``point_step`` and byte order, so clouds from other drivers read the same way. Packed ``rgb`` /
``rgba`` (float32 or uint32 holding 0x00RRGGBB, the PCL convention) becomes uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from moa_depth_ros.msgs.image_codec import set_uint8_data

if TYPE_CHECKING:
    from sensor_msgs.msg import PointCloud2

__all__ = ["FIELD_SIZES", "cloud_arrays", "make_pointcloud2"]

#: sensor_msgs/PointField datatype constant → (numpy type code without byte order, bytes).
#: The constants are fixed by the message definition (INT8 = 1 ... FLOAT64 = 8).
_FIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
FIELD_SIZES: dict[int, int] = {k: np.dtype(v).itemsize for k, v in _FIELD_TYPES.items()}


def _point_field(name: str, offset: int, datatype: int, count: int, point_step: int) -> Any:
    size = FIELD_SIZES.get(datatype)
    if size is None:
        raise ValueError(f"field '{name}': unknown PointField datatype {datatype}")
    if offset < 0 or count < 1 or offset + size * count > point_step:
        raise ValueError(
            f"field '{name}' (offset {offset}, {count} x {size} B) does not fit in "
            f"point_step {point_step}"
        )
    from sensor_msgs.msg import PointField

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
    from sensor_msgs.msg import PointCloud2

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


def cloud_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(h×w×3 float32 xyz, h×w×3 uint8 RGB or None) of a PointCloud2; invalid points stay NaN.

    Raises:
        ValueError: no x/y/z fields, an unknown datatype, or data shorter than the header says.
    """
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for field in msg.fields:
        code = _FIELD_TYPES.get(int(field.datatype))
        if code is None:
            raise ValueError(f"point field '{field.name}' has unknown datatype {field.datatype}")
        names.append(field.name)
        formats.append((order + code, (int(field.count),)) if field.count > 1 else order + code)
        offsets.append(int(field.offset))
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"point cloud has no x, y, z fields (fields: {', '.join(names)})")
    dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)}
    )
    height, width = int(msg.height), int(msg.width)
    data = np.frombuffer(
        bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, dtype=np.uint8
    )
    needed = height * int(msg.row_step)
    if data.size < needed or int(msg.row_step) < width * int(msg.point_step):
        raise ValueError(
            f"point cloud data has {data.size} bytes; {height} rows of {msg.row_step} B expected"
        )
    rows = data[:needed].reshape(height, int(msg.row_step))[:, : width * int(msg.point_step)]
    points = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    xyz = np.stack([points[a].astype(np.float32) for a in "xyz"], axis=-1)
    colour_field = next((n for n in ("rgb", "rgba") if n in names), None)
    if colour_field is None:
        return xyz, None
    packed = np.ascontiguousarray(points[colour_field])
    packed = packed.view(order + "u4") if packed.dtype.itemsize == 4 else packed.astype("u4")
    rgb = np.stack([(packed >> shift) & 0xFF for shift in (16, 8, 0)], axis=-1)
    return xyz, rgb.astype(np.uint8)
