"""``sensor_msgs/PointCloud2`` ↔ numpy: wrap a packed point buffer, and read any cloud back.

Building: :func:`pack_cloud` packs x, y, z and optional rgb (NaN for invalid pixels) in the PCL
layout with numpy only; :func:`make_pointcloud2` adds the message around its output. The
cloud is organized like depth_image_proc's (docs/ros.md): ``height`` / ``width`` are the pixel
grid, ``is_dense`` is False because invalid pixels are NaN points, and the data is
little-endian. ``sensor_msgs`` is imported only there, so reading works offline.

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

__all__ = [
    "FIELDS_XYZ",
    "FIELDS_XYZRGB",
    "FIELD_SIZES",
    "POINT_STEP_XYZ",
    "POINT_STEP_XYZRGB",
    "cloud_arrays",
    "make_pointcloud2",
    "pack_cloud",
]

#: sensor_msgs/PointField.FLOAT32
FLOAT32 = 7
#: PointCloud2 fields as (name, offset, datatype, count): the PCL PointXYZ layout (x, y, z, pad).
FIELDS_XYZ = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
#: PCL PointXYZRGB layout, as depth_image_proc / setPointCloud2FieldsByString(2, "xyz", "rgb").
FIELDS_XYZRGB = [*FIELDS_XYZ, ("rgb", 16, FLOAT32, 1)]
POINT_STEP_XYZ = 16
POINT_STEP_XYZRGB = 32


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


def _color_planes(
    color: np.ndarray, height: int, width: int, bgr: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blue, green, red) h×w uint8 planes of `color`, stride-decimated to the points' size."""
    color = np.asarray(color)
    if color.dtype != np.uint8 or color.ndim not in (2, 3):
        raise ValueError(
            f"rgb must be uint8 h×w×3 (or ×4, or mono h×w), got {color.dtype} {color.shape}"
        )
    if color.ndim == 3 and color.shape[2] not in (3, 4):
        raise ValueError(f"rgb must have 3 or 4 channels, got {color.shape[2]}")
    if color.shape[:2] != (height, width):
        # The full-size image the points were decimated from: sample it the same way.
        step = -(-color.shape[0] // height)
        if color[::step, ::step].shape[:2] != (height, width):
            raise ValueError(
                f"rgb is {color.shape[0]}×{color.shape[1]} but points are {height}×{width}; "
                "pass rgb of the points' size or the full-size image they were decimated from"
            )
        color = color[::step, ::step]
    if color.ndim == 2:
        return color, color, color
    if bgr:
        return color[..., 0], color[..., 1], color[..., 2]
    return color[..., 2], color[..., 1], color[..., 0]


def pack_cloud(
    points: np.ndarray, rgb: np.ndarray | None = None, *, bgr: bool = False
) -> tuple[np.ndarray, int, list[tuple[str, int, int, int]]]:
    """PointCloud2 `data` for organized h×w×3 float32 points, in the PCL layout.

    Returns (flat uint8 buffer of h·w·point_step bytes, point_step, fields). Without `rgb`:
    x, y, z at 0, 4, 8, point_step 16. With `rgb` (uint8 h×w×3 RGB, or BGR when `bgr`; 4 channels
    ignore alpha; h×w mono is grey): the colour at 16 as the float32 whose bytes are b, g, r, 0
    (uint32 0x00RRGGBB little-endian), point_step 32. `rgb` may also be the full-size image that
    `depth_to_points(..., decimation=d)` sampled; it is then sampled the same way. Padding is 0.
    Set the message's is_bigendian false, row_step = width·point_step, is_dense false.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be h×w×3, got shape {points.shape}")
    height, width = points.shape[:2]
    count = height * width
    if rgb is None:
        step, fields = POINT_STEP_XYZ, FIELDS_XYZ
    else:
        step, fields = POINT_STEP_XYZRGB, FIELDS_XYZRGB
        planes = _color_planes(rgb, height, width, bgr)

    # One row of float32 columns per point; zeros keep the padding bytes defined. Column-wise
    # assignment runs numpy's strided loops over all points at once (a 3-wide inner loop per
    # point would be several times slower).
    cloud = np.zeros((count, step // 4), dtype="<f4")
    for axis in range(3):
        cloud[:, axis] = points[..., axis].reshape(count)
    if rgb is not None:
        cloud_bytes = cloud.view(np.uint8)
        for offset, plane in zip((16, 17, 18), planes, strict=True):
            cloud_bytes[:, offset] = plane.reshape(count)
    return cloud.view(np.uint8).reshape(-1), step, list(fields)


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
            over the pixel grid (normally flat uint8 from ``pack_cloud``).
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
