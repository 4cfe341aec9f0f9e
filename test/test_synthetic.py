"""Synthetic RGB-D generator: exact analytic depths, determinism, NYU layout on disk."""

import math

import cv2
import numpy as np
import pytest

from moa_depth_ros.cli.synthetic import main
from moa_depth_ros.geometry import NYU_FOCAL
from moa_depth_ros.synthetic import (
    Box,
    CameraPose,
    Material,
    Scene,
    Sphere,
    camera_rotation,
    nyu_intrinsics,
    render_frame,
    render_sequence,
    render_view,
    write_synthetic_dataset,
)
from moa_depth_train.datasets import NyuSyncDataset, make_dataset, read_list_file

PLAIN = Material("plain", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1.0, 0.1, 0)
ROOM = Scene(size=(4.0, 3.0, 6.0), room_materials=(PLAIN,) * 6, light=(2.0, 2.8, 3.0))
CAMERA = CameraPose(position=(2.0, 1.5, 1.0), yaw=0.0)
W, H = 33, 25  # odd: the centre pixel is the principal point


def centre(depth):
    return float(depth[H // 2, W // 2])


def test_facing_a_wall_gives_planar_z_depth():
    rgb, depth, intrinsics = render_view(ROOM, CAMERA, W, H)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert depth.shape == (H, W) and depth.dtype == np.float32
    assert centre(depth) == pytest.approx(5.0, abs=1e-5)
    # Depth is along the optical axis: the whole fronto-parallel wall region reads 5 m.
    np.testing.assert_allclose(depth[H // 2 - 3 : H // 2 + 4, 8:-8], 5.0, atol=1e-5)
    assert intrinsics["fx"] == pytest.approx(NYU_FOCAL * W / 640)


def test_floor_depth_below_the_horizon():
    _, depth, k = render_view(ROOM, CAMERA, W, H)
    dy = (H - 1 - k["cy"]) / k["fy"]  # bottom row ray goes down dy per metre forward
    assert 1.5 / dy < 5.0  # it hits the floor before the wall
    np.testing.assert_allclose(depth[-1, W // 2], 1.5 / dy, rtol=1e-5)


def test_yaw_and_pitch_conventions():
    _, depth, _ = render_view(ROOM, CameraPose((2.0, 1.5, 1.0), yaw=math.pi / 2), W, H)
    assert centre(depth) == pytest.approx(2.0, abs=1e-5)  # looking along +x to x = 4
    _, depth, _ = render_view(ROOM, CameraPose((2.0, 1.5, 1.0), yaw=0.0, pitch=0.5), W, H)
    assert centre(depth) == pytest.approx(1.5 / math.sin(0.5), rel=1e-5)  # floor ahead
    rotation = camera_rotation(0.3, 0.2, 0.1)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_box_and_sphere_depths():
    box = Box((1.5, 1.0, 3.0), (2.5, 2.0, 3.5), PLAIN)
    _, depth, _ = render_view(Scene(**{**ROOM.__dict__, "boxes": (box,)}), CAMERA, W, H)
    assert centre(depth) == pytest.approx(2.0, abs=1e-5)
    sphere = Sphere((2.0, 1.5, 4.0), 0.5, PLAIN)
    _, depth, _ = render_view(Scene(**{**ROOM.__dict__, "spheres": (sphere,)}), CAMERA, W, H)
    assert centre(depth) == pytest.approx(2.5, abs=1e-5)
    assert depth.max() == pytest.approx(5.0, abs=1e-4)  # the wall around the sphere


def test_lit_geometry_is_visible_in_rgb():
    box = Box((1.5, 0.0, 3.0), (2.5, 1.0, 3.5), PLAIN)
    rgb, depth, _ = render_view(Scene(**{**ROOM.__dict__, "boxes": (box,)}), CAMERA, 64, 48)
    on_box = depth < 3.0
    assert on_box.any() and (~on_box).any()
    assert abs(rgb[on_box].mean() - rgb[~on_box].mean()) > 3


def test_render_frame_is_deterministic_and_nyu_like():
    a = render_frame(11, 64, 48)
    b = render_frame(11, 64, 48)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], render_frame(12, 64, 48)[1])
    depths = np.stack([render_frame(seed, 64, 48)[1] for seed in range(10)])
    assert np.isfinite(depths).all()
    assert depths.min() > 0.3 and depths.max() < 10.0
    assert 1.5 < np.median(depths) < 5.0
    assert a[0].std() > 5  # textured, not flat
    assert a[2] == nyu_intrinsics(64, 48)


def test_sequence_is_smooth_and_deterministic():
    frames = list(render_sequence(0, 96, 48, 36))
    assert len(frames) == 96
    depths = np.stack([f[1] for f in frames])
    # Median per-pixel change (robust to depth edges sliding by a pixel) stays small between
    # consecutive frames while the view does change over a quarter of the loop.
    steps = np.median(np.abs(np.diff(depths, axis=0)), axis=(1, 2))
    assert steps.max() < 0.25
    assert np.median(np.abs(depths[24] - depths[0])) > 3 * steps.max()
    again = np.stack([f[1] for f in render_sequence(0, 96, 48, 36)])
    np.testing.assert_array_equal(depths, again)


def test_written_dataset_is_readable_as_nyu_sync(tmp_path):
    summary = write_synthetic_dataset(
        tmp_path, num_frames=10, width=40, height=30, seed=2, num_scenes=3, test_fraction=0.34
    )
    assert (summary["train"], summary["test"], summary["scenes"]) == (7, 3, 3)
    dataset = NyuSyncDataset(tmp_path)
    assert len(dataset) == 10
    sample = dataset[0]
    assert sample["image"].shape == (3, 30, 40) and sample["depth"].shape == (1, 30, 40)
    raw = cv2.imread(str(tmp_path / "synthetic_0000" / "sync_depth_00000.png"), -1)
    assert raw.dtype == np.uint16
    np.testing.assert_allclose(sample["depth"][0].numpy(), raw / 1000.0, rtol=1e-6)
    assert float(sample["depth"].min()) > 0.3 and float(sample["depth"].max()) < 10

    train = read_list_file(summary["train_list"], tmp_path)
    test = read_list_file(summary["test_list"], tmp_path)
    assert len(train) == 7 and len(test) == 3
    assert {e[0].parent.name for e in train}.isdisjoint({e[0].parent.name for e in test})
    assert train[0][2] == pytest.approx(NYU_FOCAL * 40 / 640, abs=1e-3)
    assert len(make_dataset(tmp_path, "train")) == 7
    assert len(make_dataset(tmp_path, "test")) == 3


def test_single_room_holds_out_last_frames(tmp_path):
    summary = write_synthetic_dataset(tmp_path, 5, 24, 18, seed=0, num_scenes=1)
    assert (summary["train"], summary["test"]) == (4, 1)


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--frames", "3", "--width", "24", "--height", "18"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(NyuSyncDataset(tmp_path)) == 3
