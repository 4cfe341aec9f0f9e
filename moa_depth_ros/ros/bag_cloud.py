"""``sensor_msgs/PointCloud2`` (rclpy or rosbags message) → numpy points and colours.

The inverse of ``geometry.pack_cloud`` for any field layout: a structured dtype is built from
the message's own ``fields``, ``point_step`` and byte order, so clouds from other drivers read
the same way. Packed ``rgb`` / ``rgba`` (float32 or uint32 holding 0x00RRGGBB, the PCL
convention) becomes uint8 RGB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cloud_arrays"]

#: sensor_msgs/PointField datatype constant → numpy type code (without byte order).
_FIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


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
