"""make_pointcloud2 around a hand-packed PCL PointXYZRGB buffer; cloud_arrays reads clouds back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import T0
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
from moa_depth_ros.msgs.pointcloud import (
    FIELDS_XYZ,
    FIELDS_XYZRGB,
    cloud_arrays,
    cloud_xyz,
    make_pointcloud2,
    pack_cloud,
)
from moa_depth_ros.msgs.rosbags_messages import header as bag_header
from moa_depth_ros.msgs.rosbags_messages import typestore
from moa_depth_ros.ply import write_ply

F32 = PointField.FLOAT32
XYZ_FIELDS = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)]
XYZRGB_FIELDS = [*XYZ_FIELDS, ("rgb", 16, F32, 1)]
XYZRGB = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4,
                   "offsets": [0, 4, 8, 16], "itemsize": 32})  # fmt: skip
XYZ = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8],
                "itemsize": 16})  # fmt: skip


def header() -> Header:
    h = Header(frame_id="camera_optical")
    h.stamp.sec = 42
    return h


def packed_cloud(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A structured grid of points with one NaN (invalid) pixel, and its flat byte buffer."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    points = np.zeros((h, w), XYZRGB)
    points["x"], points["y"], points["z"] = u * 0.1, v * 0.1, 1.0 + u + v
    points[0, 1] = (np.nan, np.nan, np.nan, 0.0)
    r, g, b = np.uint32(200), (u * 10).astype(np.uint32), (v * 20).astype(np.uint32)
    points["rgb"] = ((r << 16) | (g << 8) | b).view(np.float32)
    return points, points.reshape(-1).view(np.uint8)


def test_xyzrgb_cloud_fields_sizes_and_bytes():
    h, w = 3, 5
    points, buffer = packed_cloud(h, w)
    msg = make_pointcloud2(header(), buffer, w, h, 32, XYZRGB_FIELDS)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (h, w, 32, w * 32)
    assert msg.is_dense is False and msg.is_bigendian is False
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec == 42
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert fields == XYZRGB_FIELDS
    assert len(msg.data) == h * w * 32

    wire = deserialize_message(serialize_message(msg), PointCloud2)
    back = np.frombuffer(wire.data, XYZRGB).reshape(wire.height, wire.width)
    for name in ("x", "y", "z"):
        np.testing.assert_array_equal(back[name], points[name])  # NaN-aware
    assert np.isnan(back["x"][0, 1])
    raw = np.frombuffer(wire.data, np.uint8).reshape(h, w, 32)
    # rgb packed little-endian: b at +16, g at +17, r at +18.
    np.testing.assert_array_equal(raw[2, 4, 16:19], [40, 40, 200])


def test_xyz_only_cloud():
    h, w = 2, 4
    points = np.zeros((h, w), XYZ)
    points["z"] = np.arange(h * w, dtype=np.float32).reshape(h, w)
    msg = make_pointcloud2(header(), points.reshape(-1).view(np.uint8), w, h, 16, XYZ_FIELDS)
    assert (msg.point_step, msg.row_step, len(msg.data), len(msg.fields)) == (16, 64, 128, 3)
    back = np.frombuffer(msg.data, XYZ).reshape(h, w)
    np.testing.assert_array_equal(back["z"], points["z"])


def test_rejects_inconsistent_inputs():
    _, buffer = packed_cloud(3, 5)
    with pytest.raises(ValueError, match="480 bytes, expected"):
        make_pointcloud2(header(), buffer, 4, 3, 32, XYZRGB_FIELDS)
    with pytest.raises(ValueError, match="'rgb'.*does not fit in point_step 16"):
        make_pointcloud2(header(), buffer, 10, 3, 16, XYZRGB_FIELDS)
    with pytest.raises(ValueError, match="unknown PointField datatype 99"):
        make_pointcloud2(header(), buffer, 5, 3, 32, [("x", 0, 99, 1)])
    with pytest.raises(ValueError, match="positive sizes"):
        make_pointcloud2(header(), buffer[:0], 0, 3, 32, XYZRGB_FIELDS)


def test_cloud_arrays_and_ply_round_trip(tmp_path: Path) -> None:

    depth = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    points = depth_to_points(depth, CameraIntrinsics(2, 2, 0.5, 0.5, 2, 2))
    data, step, fields = pack_cloud(points, rgb)
    store = typestore()
    field_type = store.types["sensor_msgs/msg/PointField"]
    cloud = store.types["sensor_msgs/msg/PointCloud2"](
        header=bag_header(T0, "cam"),
        height=2,
        width=2,
        fields=[field_type(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=False,
        point_step=step,
        row_step=2 * step,
        data=data,
        is_dense=False,
    )
    raw = store.serialize_cdr(cloud, cloud.__msgtype__)
    xyz, colours = cloud_arrays(store.deserialize_cdr(raw, cloud.__msgtype__))
    np.testing.assert_array_equal(xyz, points)
    np.testing.assert_array_equal(colours, rgb)

    assert write_ply(tmp_path / "c.ply", xyz, colours) == 3  # the NaN point is dropped
    blob = (tmp_path / "c.ply").read_bytes()
    head, body = blob.split(b"end_header\n")
    assert b"format binary_little_endian 1.0" in head and b"element vertex 3" in head
    assert len(body) == 3 * 15
    assert write_ply(tmp_path / "a.ply", xyz, colours, binary=False) == 3
    lines = (tmp_path / "a.ply").read_text().split("end_header\n")[1].splitlines()
    assert lines[-1].split()[3:] == ["10", "20", "30"]


def _floats(data: np.ndarray, point: int, step: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4", count=3, offset=point * step)


def test_pack_xyzrgb_byte_layout():
    points = np.array(
        [[[1.0, 2.0, 3.0], [-4.5, 0.25, 8.0]], [[np.nan] * 3, [0.0, -1.0, 1.5]]],
        dtype=np.float32,
    )
    rgb = np.array([[[10, 20, 30], [255, 0, 1]], [[7, 8, 9], [100, 150, 200]]], dtype=np.uint8)
    data, step, fields = pack_cloud(points, rgb)
    assert step == 32
    assert (
        fields
        == FIELDS_XYZRGB
        == [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
            ("rgb", 16, 7, 1),
        ]
    )
    assert data.dtype == np.uint8 and data.shape == (4 * 32,)
    raw = data.tobytes()
    np.testing.assert_array_equal(_floats(raw, 0, 32), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(_floats(raw, 1, 32), [-4.5, 0.25, 8.0])
    assert np.isnan(_floats(raw, 2, 32)).all()
    np.testing.assert_array_equal(_floats(raw, 3, 32), [0.0, -1.0, 1.5])
    # b, g, r at 16, 17, 18, then zero; padding 12..15 and 20..31 zero.
    assert raw[16:20] == bytes([30, 20, 10, 0])
    assert raw[32 + 16 : 32 + 20] == bytes([1, 0, 255, 0])
    assert raw[3 * 32 + 16 : 3 * 32 + 20] == bytes([200, 150, 100, 0])
    for point in range(4):
        base = point * 32
        assert raw[base + 12 : base + 16] == bytes(4)
        assert raw[base + 20 : base + 32] == bytes(12)
    # As the uint32 PCL reads: 0x00RRGGBB.
    assert np.frombuffer(raw, "<u4", count=1, offset=16)[0] == 0x000A141E


def test_pack_xyz_only_has_step_16():
    points = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], dtype=np.float32)
    data, step, fields = pack_cloud(points)
    assert step == 16
    assert fields == FIELDS_XYZ
    raw = data.tobytes()
    assert len(raw) == 2 * 16
    np.testing.assert_array_equal(_floats(raw, 1, 16), [4.0, 5.0, 6.0])
    assert raw[12:16] == bytes(4) and raw[28:32] == bytes(4)


def test_pack_bgr_and_full_size_color_is_decimated():
    depth = np.full((4, 6), 2.0, dtype=np.float32)
    points = depth_to_points(depth, CameraIntrinsics(4.0, 4.0, 3.0, 2.0, 6, 4), decimation=2)
    bgr = np.zeros((4, 6, 3), dtype=np.uint8)
    bgr[2, 4] = (1, 2, 3)  # b, g, r of the full-size pixel sampled as points[1, 2]
    raw = pack_cloud(points, bgr, bgr=True)[0].tobytes()
    offset = (1 * 3 + 2) * 32 + 16
    assert raw[offset : offset + 4] == bytes([1, 2, 3, 0])
    np.testing.assert_array_equal(_floats(raw, 5, 32), [0.5, 0.0, 2.0])  # (4 - 3)·2/4


def test_pack_rejects_mismatched_color():
    points = np.zeros((2, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="rgb"):
        pack_cloud(points, np.zeros((5, 5, 3), dtype=np.uint8))


def _xyz_cloud(h: int, w: int) -> tuple[np.ndarray, PointCloud2]:
    points = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3)
    buffer, step, fields = pack_cloud(points)
    return points, make_pointcloud2(header(), buffer, w, h, step, fields)


def test_a_broken_field_layout_is_named_not_a_numpy_error() -> None:
    _, cloud = _xyz_cloud(2, 3)
    cloud.point_step, cloud.row_step = 8, 24  # z at 8 no longer fits
    expected = (
        "point field 'z' at offset 8 (1 x 4 B) does not fit in point_step 8; "
        "fields x@0 float32, y@4 float32, z@8 float32, point_step 8"
    )
    for read in (cloud_arrays, cloud_xyz):
        with pytest.raises(ValueError) as error:
            read(cloud)
        assert str(error.value) == expected  # was "NumPy dtype descriptor requires 16 bytes"
    _, cloud = _xyz_cloud(2, 3)
    cloud.fields[1].datatype = 42
    with pytest.raises(ValueError, match=r"'y' has unknown datatype 42; fields x@0 float32, y@4 "):
        cloud_arrays(cloud)
    cloud.fields = cloud.fields[:1]
    with pytest.raises(ValueError, match=r"no x, y, z fields \(fields x@0 float32, point_step 16"):
        cloud_xyz(cloud)
    _, cloud = _xyz_cloud(2, 3)
    cloud.row_step = 40  # rows shorter than their 3 points of 16 B
    with pytest.raises(ValueError, match="2 rows of 40 B of 3 points x 16 B expected"):
        cloud_xyz(cloud)


def test_cloud_xyz_reads_only_xyz_thinned_to_a_bound() -> None:
    points, cloud = _xyz_cloud(4, 25)  # 100 points
    xyz, total = cloud_xyz(cloud)
    assert total == 100 and xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, points.reshape(-1, 3))
    xyz, total = cloud_xyz(cloud, max_points=30)  # every 4th point: 25 of them
    assert total == 100
    np.testing.assert_array_equal(xyz, points.reshape(-1, 3)[::4])
    with pytest.raises(ValueError, match="max_points must be >= 1"):
        cloud_xyz(cloud, 0)
    # Padded rows (row_step > width · point_step) are read row by row.
    buffer, step, fields = pack_cloud(points)
    padded = np.zeros((4, 25 * step + 8), np.uint8)
    padded[:, : 25 * step] = buffer.reshape(4, -1)
    cloud.row_step, cloud.data = 25 * step + 8, padded.reshape(-1).tobytes()
    np.testing.assert_array_equal(cloud_xyz(cloud)[0], points.reshape(-1, 3))
    np.testing.assert_array_equal(cloud_arrays(cloud)[0], points)
