"""``sensor_msgs/PointCloud2`` ↔ numpy: wrap a packed point buffer, and read any cloud back.

Building: :func:`pack_cloud` packs x, y, z and optional rgb (NaN for invalid pixels) in the PCL
layout with numpy only; :func:`make_pointcloud2` adds the message around its output. The
cloud is organized like depth_image_proc's (docs/ros.md): ``height`` / ``width`` are the pixel
grid, ``is_dense`` is False because invalid pixels are NaN points, and the data is
little-endian. ``sensor_msgs`` is imported only there, so reading works offline.

Reading: :func:`cloud_arrays` is the inverse of ``pack_cloud`` for any field layout (rclpy or
rosbags messages): a structured dtype is built from the message's own ``fields``,
``point_step`` and byte order, so clouds from other drivers read the same way. Packed ``rgb`` /
``rgba`` (float32 or uint32 holding 0x00RRGGBB, the PCL convention) becomes uint8 RGB. A layout
that does not hold together (a field beyond ``point_step``, short data) is a ValueError naming
the fields, offsets and point_step. :func:`cloud_xyz` reads x, y, z only, thinned to a bound.
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
    "cloud_xyz",
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


def _field_layout(msg: Any) -> str:
    """The layout in a few words, for errors: 'fields x@0 float32, ..., point_step 16'."""
    fields = ", ".join(
        f"{f.name}@{int(f.offset)}"
        + (f"x{int(f.count)}" if int(f.count) != 1 else "")
        + f" {_type_name(int(f.datatype))}"
        for f in msg.fields
    )
    return f"fields {fields or '(none)'}, point_step {msg.point_step}"


def _type_name(datatype: int) -> str:
    code = _FIELD_TYPES.get(datatype)
    return np.dtype(code).name if code else f"datatype {datatype}"


def _cloud_dtype(msg: Any, wanted: Iterable[str] | None = None) -> tuple[np.dtype, list[str]]:
    """(structured dtype of one point, every field name) from the message's own fields,
    checked: each field (or the ``wanted`` ones) a known type that fits in ``point_step``.

    Raises:
        ValueError: naming the field, its offset and size, and the whole layout.
    """
    order = ">" if msg.is_bigendian else "<"
    step = int(msg.point_step)
    if step < 1:
        raise ValueError(f"point cloud point_step is {step}; {_field_layout(msg)}")
    all_names = [str(f.name) for f in msg.fields]
    keep = set(all_names if wanted is None else wanted)
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.name not in keep or field.name in names:
            continue
        code = _FIELD_TYPES.get(int(field.datatype))
        if code is None:
            raise ValueError(
                f"point field '{field.name}' has unknown datatype {field.datatype}; "
                f"{_field_layout(msg)}"
            )
        count, offset, size = int(field.count), int(field.offset), FIELD_SIZES[int(field.datatype)]
        if count < 1 or offset < 0 or offset + size * count > step:
            raise ValueError(
                f"point field '{field.name}' at offset {offset} ({count} x {size} B) does not "
                f"fit in point_step {step}; {_field_layout(msg)}"
            )
        names.append(str(field.name))
        formats.append((order + code, (count,)) if count > 1 else order + code)
        offsets.append(offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    return dtype, all_names


def _cloud_points(msg: Any, dtype: np.dtype) -> np.ndarray:
    """The message's points as an h×w structured view of its data (no copy of the bytes).

    Raises:
        ValueError: data shorter than the header says, or rows shorter than their points.
    """
    height, width = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    data = msg.data
    if isinstance(data, (list, tuple)):
        data = np.asarray(data, dtype=np.uint8)
    data = np.frombuffer(data, dtype=np.uint8)  # rclpy's array.array or rosbags' ndarray
    needed = height * row_step
    if data.size < needed or row_step < width * step:
        raise ValueError(
            f"point cloud data has {data.size} bytes; {height} rows of {row_step} B of "
            f"{width} points x {step} B expected"
        )
    if height == 0 or width == 0:
        return np.zeros((height, width), dtype)
    return np.ndarray((height, width), dtype, data, 0, (row_step, step))


def cloud_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(h×w×3 float32 xyz, h×w×3 uint8 RGB or None) of a PointCloud2; invalid points stay NaN.

    Raises:
        ValueError: no x/y/z fields, an unknown datatype, a field outside ``point_step``, or
            data shorter than the header says (naming the layout).
    """
    dtype, names = _cloud_dtype(msg)
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"point cloud has no x, y, z fields ({_field_layout(msg)})")
    points = _cloud_points(msg, dtype)
    xyz = np.stack([points[a].astype(np.float32) for a in "xyz"], axis=-1)
    colour_field = next((n for n in ("rgb", "rgba") if n in names), None)
    if colour_field is None:
        return xyz, None
    order = ">" if msg.is_bigendian else "<"
    packed = np.ascontiguousarray(points[colour_field])
    packed = packed.view(order + "u4") if packed.dtype.itemsize == 4 else packed.astype("u4")
    rgb = np.stack([(packed >> shift) & 0xFF for shift in (16, 8, 0)], axis=-1)
    return xyz, rgb.astype(np.uint8)


def cloud_xyz(msg: Any, max_points: int | None = None) -> tuple[np.ndarray, int]:
    """(N×3 float32 x, y, z, the cloud's point count) of a PointCloud2, reading only x, y, z.

    With ``max_points`` a larger cloud is thinned evenly (every k-th point, k the smallest that
    keeps at most ``max_points``) before anything is converted: time and memory stay bounded
    whatever the message's size. Invalid points stay NaN.

    Raises:
        ValueError: as :func:`cloud_arrays`.
    """
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    names = {str(f.name) for f in msg.fields}
    if not {"x", "y", "z"} <= names:
        raise ValueError(f"point cloud has no x, y, z fields ({_field_layout(msg)})")
    dtype, _ = _cloud_dtype(msg, ("x", "y", "z"))
    points = _cloud_points(msg, dtype).reshape(-1)
    total = points.size
    if max_points is not None and total > max_points:
        points = points[:: -(-total // max_points)]
    xyz = np.empty((points.size, 3), np.float32)
    for axis, name in enumerate("xyz"):
        xyz[:, axis] = points[name]
    return xyz, total
