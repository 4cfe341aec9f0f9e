"""moa-depth-bag make-demo: the synthetic camera bag, with and without ROS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import GT, IMAGE, REPO, SECOND, T0

from moa_depth_ros.bags.io import BagReader
from moa_depth_ros.cli.bag import main
from moa_depth_ros.msgs.stamps import header_stamp_ns


def test_make_demo_bag_matches_the_generator(tmp_path: Path, capsys) -> None:
    from moa_depth_ros.msgs.image_codec import image_msg_to_array, image_msg_to_rgb
    from moa_depth_ros.synthetic import render_sequence

    argv = ["make-demo", "--out", str(tmp_path / "demo"), "--frames", "3", "--width", "32"]
    assert main([*argv, "--height", "24", "--rate", "5", "--storage", "sqlite3"]) == 0
    expected = list(render_sequence(0, 3, 32, 24))
    with BagReader(tmp_path / "demo") as reader:
        topics = reader.topics()
        assert {t: s.count for t, s in topics.items()} == {
            "/camera/camera_info": 3,
            "/camera/depth/ground_truth": 3,
            "/camera/image_raw": 3,
        }
        by_topic: dict[str, list] = {}
        for message in reader.messages():
            by_topic.setdefault(message.topic, []).append(reader.decode(message))
    for index, (rgb, depth, intrinsics) in enumerate(expected):
        image = by_topic[IMAGE][index]
        info = by_topic["/camera/camera_info"][index]
        assert header_stamp_ns(image) == T0 + index * SECOND // 5
        assert image.header.frame_id == "camera_optical_frame" == info.header.frame_id
        np.testing.assert_array_equal(image_msg_to_rgb(image), rgb)
        np.testing.assert_array_equal(image_msg_to_array(by_topic[GT][index]), depth)
        assert info.k[0] == pytest.approx(intrinsics["fx"]) and info.p[6] == intrinsics["cy"]


def test_make_demo_splits_frames_over_rooms(tmp_path: Path) -> None:
    from moa_depth_ros.msgs.image_codec import image_msg_to_array
    from moa_depth_ros.synthetic import render_sequence

    argv = ["make-demo", "--out", str(tmp_path / "demo"), "--frames", "3", "--rooms", "2"]
    assert main([*argv, "--width", "16", "--height", "12", "--seed", "5", "--no-progress"]) == 0
    expected = [*render_sequence(5, 2, 16, 12), *render_sequence(6, 1, 16, 12)]
    with BagReader(tmp_path / "demo") as reader:
        depths = [image_msg_to_array(reader.decode(m)) for m in reader.messages([GT])]
    assert len(depths) == 3
    for depth, (_, expected_depth, _) in zip(depths, expected, strict=True):
        np.testing.assert_array_equal(depth, expected_depth)


def test_info_and_make_demo_work_without_ros(tmp_path: Path) -> None:
    """rclpy and the message packages blocked: the pure-Python commands still work."""
    script = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces'):\n"
        "    sys.modules[name] = None\n"
        "from moa_depth_ros.cli.bag import main\n"
        f"assert main(['make-demo', '--out', r'{tmp_path / 'demo'}', '--frames', '2',\n"
        "             '--width', '16', '--height', '12', '--no-progress']) == 0\n"
        f"assert main(['info', r'{tmp_path / 'demo'}']) == 0\n"
        "assert main(['play', 'x']) == 2\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "/camera/depth/ground_truth" in result.stdout
    assert "'play' needs the ROS 2 Python package 'rclpy'" in result.stderr
