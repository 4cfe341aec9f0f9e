"""Pinhole geometry: camera_info intrinsics, back-projection and projection."""

import numpy as np
import pytest

from moa_depth_ros.geometry import (
    CameraIntrinsics,
    depth_to_points,
    intrinsics_from_camera_info,
    project_points,
)

# A 3×2 image: fx=2, fy=4, cx=1, cy=0.5.
SMALL = CameraIntrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.5, width=3, height=2)
VGA = CameraIntrinsics(fx=500.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)


def _k(fx, fy, cx, cy):
    return [fx, 0, cx, 0, fy, cy, 0, 0, 1]


def _p(fx, fy, cx, cy):
    return [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0]


def test_points_match_pinhole_formula_by_hand():
    depth = np.array([[1, 2, 4], [2, 2, 2]], dtype=np.float32)
    # X = (u - 1)·Z/2, Y = (v - 0.5)·Z/4, worked out per pixel.
    expected = np.array(
        [
            [[-0.5, -0.125, 1.0], [0.0, -0.25, 2.0], [2.0, -0.5, 4.0]],
            [[-1.0, 0.25, 2.0], [0.0, 0.25, 2.0], [1.0, 0.25, 2.0]],
        ],
        dtype=np.float32,
    )
    points = depth_to_points(depth, SMALL)
    assert points.shape == (2, 3, 3)
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points, expected)


def test_projecting_points_gives_the_pixel_grid():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 20.0, size=(48, 64)).astype(np.float32)
    intrinsics = CameraIntrinsics(fx=55.5, fy=52.25, cx=30.2, cy=25.7, width=64, height=48)
    u, v = project_points(depth_to_points(depth, intrinsics), intrinsics)
    rows, cols = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(u, cols, atol=1e-4)
    np.testing.assert_allclose(v, rows, atol=1e-4)


def test_decimation_uses_full_image_pixel_coordinates():
    depth = np.full((5, 7), 2.0, dtype=np.float32)
    intrinsics = CameraIntrinsics(fx=2.0, fy=2.0, cx=3.0, cy=2.0, width=7, height=5)
    points = depth_to_points(depth, intrinsics, decimation=3)
    # Samples at u = 0, 3, 6 and v = 0, 3: X = (u - 3)·2/2, Y = (v - 2)·2/2.
    assert points.shape == (2, 3, 3)
    np.testing.assert_array_equal(points[0, :, 0], [-3.0, 0.0, 3.0])
    np.testing.assert_array_equal(points[:, 0, 1], [-2.0, 1.0])
    u, v = project_points(points, intrinsics)
    np.testing.assert_allclose(u, [[0, 3, 6], [0, 3, 6]], atol=1e-6)
    np.testing.assert_allclose(v, [[0, 0, 0], [3, 3, 3]], atol=1e-6)


def test_intrinsics_for_a_larger_image_are_rescaled_to_the_depth():
    assert VGA.scaled(320, 240) == CameraIntrinsics(250.0, 200.0, 160.0, 120.0, 320, 240)
    depth = np.full((240, 320), 3.0, dtype=np.float32)
    points = depth_to_points(depth, VGA)
    # Pixel (u=10, v=20) at half size: X = (10 - 160)·3/250, Y = (20 - 120)·3/200.
    np.testing.assert_allclose(points[20, 10], [-1.8, -1.5, 3.0], rtol=1e-6)
    # Resizing by striding and decimating the full-size map are the same samples.
    rng = np.random.default_rng(1)
    full = rng.uniform(0.5, 5.0, size=(480, 640)).astype(np.float32)
    np.testing.assert_array_equal(
        depth_to_points(full[::2, ::2], VGA), depth_to_points(full, VGA, decimation=2)
    )


def test_invalid_depth_gives_nan_xyz():
    depth = np.array([[np.nan, 0.0, -1.0], [np.inf, -np.inf, 2.0]], dtype=np.float32)
    points = depth_to_points(depth, SMALL)
    assert np.isnan(points.reshape(-1, 3)[:5]).all()
    np.testing.assert_array_equal(points[1, 2], [1.0, 0.25, 2.0])


def test_ray_cache_does_not_mix_intrinsics():
    depth = np.ones((2, 3), dtype=np.float32)
    first = depth_to_points(depth, SMALL)[0, 0, 0]
    shifted = CameraIntrinsics(fx=2.0, fy=4.0, cx=2.0, cy=0.5, width=3, height=2)
    assert first == -0.5
    assert depth_to_points(depth, shifted)[0, 0, 0] == -1.0
    assert depth_to_points(depth, SMALL)[0, 0, 0] == -0.5


def test_integer_depth_is_rejected():
    with pytest.raises(TypeError, match="16UC1"):
        depth_to_points(np.ones((2, 3), dtype=np.uint16), SMALL)


def test_camera_info_prefers_p_over_k():
    intrinsics = intrinsics_from_camera_info(
        640, 480, _k(500, 400, 320, 240), _p(480, 390, 310, 235)
    )
    assert intrinsics == CameraIntrinsics(480.0, 390.0, 310.0, 235.0, 640, 480)


def test_camera_info_falls_back_to_k_when_p_is_zero():
    intrinsics = intrinsics_from_camera_info(640, 480, _k(500, 400, 320, 240), [0.0] * 12)
    assert intrinsics == CameraIntrinsics(500.0, 400.0, 320.0, 240.0, 640, 480)


def test_camera_info_binning():
    intrinsics = intrinsics_from_camera_info(
        640, 480, _k(1, 1, 1, 1), _p(500, 400, 320, 240), binning_x=2, binning_y=4
    )
    # fx/2, fy/4, cx/2, cy/4; image 640/2 × 480/4.
    assert intrinsics == CameraIntrinsics(250.0, 100.0, 160.0, 60.0, 320, 120)


def test_camera_info_roi():
    p = _p(500, 400, 320, 240)
    roi = dict(roi_x_offset=100, roi_y_offset=50, roi_width=200, roi_height=100)
    assert intrinsics_from_camera_info(640, 480, _k(1, 1, 1, 1), p, **roi) == CameraIntrinsics(
        500.0, 400.0, 220.0, 190.0, 200, 100
    )
    # REP 104 with binning too: cx' = (320 - 100)/2, cy' = (240 - 50)/2.
    binned = intrinsics_from_camera_info(640, 480, _k(1, 1, 1, 1), p, 2, 2, **roi)
    assert binned == CameraIntrinsics(250.0, 200.0, 110.0, 95.0, 100, 50)
    # A full-size ROI is the same as none.
    full = dict(roi_x_offset=0, roi_y_offset=0, roi_width=640, roi_height=480)
    assert intrinsics_from_camera_info(640, 480, _k(1, 1, 1, 1), p, **full) == VGA


@pytest.mark.parametrize(
    ("k", "p", "field"),
    [
        (_k(1, 1, 1, 1), _p(-500, 400, 320, 240), r"P\[0\] \(fx\)"),
        (_k(1, 1, 1, 1), _p(500, 0, 320, 240), r"P\[5\] \(fy\)"),
        (_k(0, 400, 320, 240), [0.0] * 12, r"K\[0\] \(fx\)"),
        (_k(500, np.nan, 320, 240), [0.0] * 12, r"K\[4\] \(fy\)"),
        ([0.0] * 9, [0.0] * 12, "K and P"),
        ([0.0] * 8, _p(500, 400, 320, 240), "K must have 9"),
    ],
)
def test_camera_info_errors_name_the_field(k, p, field):
    with pytest.raises(ValueError, match=field):
        intrinsics_from_camera_info(640, 480, k, p)


def test_camera_info_roi_outside_image_is_rejected():
    with pytest.raises(ValueError, match="roi"):
        intrinsics_from_camera_info(
            640, 480, _k(1, 1, 1, 1), _p(500, 400, 320, 240), roi_x_offset=500, roi_width=200
        )


def test_intrinsics_errors_name_the_field():
    with pytest.raises(ValueError, match="fy"):
        CameraIntrinsics(fx=1.0, fy=0.0, cx=0.0, cy=0.0, width=4, height=4)
    with pytest.raises(ValueError, match="height"):
        CameraIntrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=4, height=0)


def test_intrinsics_for_image_rejects_other_aspects_and_unusable_rays() -> None:
    from moa_depth_ros.geometry import CameraIntrinsics, intrinsics_for_image

    camera = CameraIntrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    half = intrinsics_for_image(camera, 320, 240)
    assert (half.fx, half.cx, half.width) == (250.0, 160.0, 320)
    with pytest.raises(ValueError, match="100x1000 image, which has another aspect ratio"):
        intrinsics_for_image(CameraIntrinsics(50, 50, 50, 500, 100, 1000), 160, 120)
    with pytest.raises(ValueError, match="another aspect ratio"):  # a 2e9 x 2e9 "sensor"
        intrinsics_for_image(
            CameraIntrinsics(1e9, 1e9, 1e9, 1e9, 2_000_000_000, 2_000_000_000), 160, 120
        )
    with pytest.raises(ValueError, match="no usable rays"):
        intrinsics_for_image(CameraIntrinsics(1e-300, 1e-300, 80, 60, 160, 120), 160, 120)
