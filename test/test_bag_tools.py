"""Bag tools: rosbags I/O round trips, info, eval (pairing, alignment, errors), make-demo, PLY,
and play -> record through real rclpy in separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import REPO, SECOND, T0, depth_frames, eval_bag, ros_env, write_messages

from moa_depth_ros.geometry import depth_to_points, pack_cloud
from moa_depth_ros.ply import write_ply
from moa_depth_ros.ros.bag_cli import main
from moa_depth_ros.ros.bag_cloud import cloud_arrays
from moa_depth_ros.ros.bag_io import BagError, BagReader, header_stamp_ns, typestore
from moa_depth_ros.ros.bag_messages import camera_info_message, header, image_message
from moa_depth_ros.ros.bag_pairing import pair_by_stamp

GT, IMAGE, PRED = "/camera/depth/ground_truth", "/camera/image_raw", "/depth/image"
PERIOD = SECOND // 10


def _eval(bag: Path, out: Path, *extra: str) -> tuple[int, dict]:
    argv = ["eval", str(bag), "--image-topic", IMAGE, "--gt-topic", GT, "--pred-topic", PRED]
    code = main([*argv, "--out", str(out), "--no-progress", *extra])
    report = out / "report.json"
    return code, json.loads(report.read_text()) if report.exists() else {}


def _mixed_messages(count: int) -> list[tuple[str, int, object]]:
    rng = np.random.default_rng(1)
    messages = []
    for i in range(count):
        stamp = T0 + i * PERIOD
        rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        messages.append((IMAGE, stamp + 1000, image_message(rgb, stamp, "cam")))
        info = camera_info_message({"fx": 5, "fy": 5, "cx": 4, "cy": 3}, 8, 6, stamp, "cam")
        messages.append(("/camera/camera_info", stamp + 2000, info))
    return messages


# ------------------------------------------------------------------------------ bag I/O


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_keeps_data_order_and_stamps(tmp_path: Path, storage: str) -> None:
    written = _mixed_messages(5)
    write_messages(tmp_path / "bag", written, storage)
    with BagReader(tmp_path / "bag") as reader:
        assert reader.summary().storage == storage
        read = [(m.topic, m.timestamp_ns, reader.decode(m)) for m in reader.messages()]
    assert [(t, ts) for t, ts, _ in read] == [(t, ts) for t, ts, _ in written]
    for (_, _, original), (_, _, back) in zip(written, read, strict=True):
        assert header_stamp_ns(back) == header_stamp_ns(original)
        if hasattr(original, "data"):
            np.testing.assert_array_equal(back.data, original.data)
        else:
            np.testing.assert_array_equal(back.k, original.k)


def test_info_lists_topics_types_counts_and_duration(tmp_path: Path, capsys) -> None:
    write_messages(tmp_path / "bag", _mixed_messages(4), "sqlite3")
    assert main(["info", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "storage:   sqlite3" in out
    assert "duration:  0.300 s" in out
    assert "messages:  8" in out
    assert "/camera/camera_info  sensor_msgs/msg/CameraInfo" in out
    assert "/camera/image_raw    sensor_msgs/msg/Image" in out
    assert out.count("      4 msgs") == 2


def test_info_reads_a_ros1_bag(tmp_path: Path, capsys) -> None:
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    string = store.types["std_msgs/msg/String"]
    with Ros1Writer(tmp_path / "old.bag") as writer:
        connection = writer.add_connection("/chatter", string.__msgtype__, typestore=store)
        for i in range(3):
            data = store.serialize_ros1(string(data=f"hello {i}"), string.__msgtype__)
            writer.write(connection, T0 + i * SECOND, data)
    assert main(["info", str(tmp_path / "old.bag")]) == 0
    out = capsys.readouterr().out
    assert "storage:   rosbag1" in out and "duration:  2.000 s" in out
    assert "/chatter  std_msgs/msg/String" in out and "3 msgs" in out


# ------------------------------------------------------------------------------ pairing


def test_pairing_is_one_to_one_and_closest_first() -> None:
    # 105 is closest to 100 and 110; 100 gets it, 110 pairs with nothing else within slop 6.
    assert pair_by_stamp([100, 110, 200], [105, 199, 400], 6) == [(0, 0), (2, 1)]
    assert pair_by_stamp([5, 5], [5], 0) == [(0, 0)]  # a repeated stamp is used once
    assert pair_by_stamp([], [1], 10) == []


# ------------------------------------------------------------------------------ eval


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_eval_prediction_ten_percent_too_far(tmp_path: Path, storage: str) -> None:
    gt = depth_frames(4)
    stamps = [T0 + i * PERIOD for i in range(4)]
    eval_bag(tmp_path / "bag", gt, stamps, [1.1 * d for d in gt], stamps, storage=storage)
    code, report = _eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    overall = report["overall"]
    assert overall["abs_rel"] == pytest.approx(0.1, abs=1e-5)
    assert overall["delta1"] == 1.0
    assert overall["count"] == 4
    assert report["counts"]["matched"] == 4
    assert [row["gt_stamp_ns"] for row in report["per_frame"]] == stamps
    for name in ("report.md", "per_frame_metrics.png", "samples.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "![samples](samples.png)" in markdown and "| prediction | 0.100 |" in markdown


def test_eval_reads_16uc1_predictions_and_resizes_them(tmp_path: Path) -> None:
    # Piecewise-constant ground truth at 2x the prediction size: nearest resize is exact.
    small = [np.full((6, 8), 1.5, np.float32), np.full((6, 8), 3.25, np.float32)]
    gt = [np.kron(d, np.ones((2, 2), np.float32)) for d in small]
    preds = [np.rint(d * 1000).astype(np.uint16) for d in small]  # millimetres, REP 118
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, preds, stamps)
    code, report = _eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    assert report["overall"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_eval_pairs_by_header_stamp_with_jitter_and_drops(tmp_path: Path) -> None:
    gt = depth_frames(10)
    gt_stamps = [T0 + i * PERIOD for i in range(10)]
    jitter = [3, -4, 2, 0, -1, 4, -3, 1, 2, -2]  # ms, inside the 5 ms slop
    kept = [0, 1, 2, 4, 5, 7, 8, 9]  # frames 3 and 6 dropped by the "node"
    pred_stamps = [gt_stamps[i] + jitter[i] * 1_000_000 for i in kept]
    pred_stamps.append(T0 + 20 * PERIOD)  # a prediction with no ground truth
    preds = [gt[i] * 1.1 for i in kept] + [gt[0]]
    # Predictions arrive 150 ms late in bag time: pairing by receive time would be off by one.
    eval_bag(tmp_path / "bag", gt, gt_stamps, preds, pred_stamps, pred_delay_ns=150_000_000)
    code, report = _eval(tmp_path / "bag", tmp_path / "out", "--slop", "0.005")
    assert code == 0
    assert report["counts"] == {
        "predictions": 9,
        "ground_truth": 10,
        "matched": 8,
        "unmatched_predictions": 1,
        "unmatched_ground_truth": 2,
        "without_valid_pixels": 0,
        "undecodable": 0,
        "evaluated": 8,
    }
    assert report["overall"]["abs_rel"] == pytest.approx(0.1, abs=1e-5)
    assert [row["gt_stamp_ns"] for row in report["per_frame"]] == [gt_stamps[i] for i in kept]


def test_eval_counts_frames_without_valid_pixels(tmp_path: Path) -> None:
    gt = depth_frames(2)
    gt[1][:] = np.nan
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, gt, stamps)
    code, report = _eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    assert report["counts"]["without_valid_pixels"] == 1
    assert report["counts"]["evaluated"] == 1


def test_eval_median_alignment_undoes_a_global_scale(tmp_path: Path) -> None:
    gt = depth_frames(3)
    stamps = [T0 + i * PERIOD for i in range(3)]
    eval_bag(tmp_path / "bag", gt, stamps, [0.5 * d for d in gt], stamps)
    _, raw = _eval(tmp_path / "bag", tmp_path / "raw")
    _, aligned = _eval(tmp_path / "bag", tmp_path / "aligned", "--align", "median")
    assert raw["overall"]["abs_rel"] == pytest.approx(0.5, abs=1e-5)
    assert aligned["overall"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert aligned["overall"]["delta1"] == 1.0
    assert aligned["settings"]["align"] == "median"


def test_eval_baseline_row(tmp_path: Path) -> None:
    gt = [np.full((4, 4), 2.0, np.float32)]
    eval_bag(tmp_path / "bag", gt, [T0], gt, [T0])
    _, report = _eval(tmp_path / "bag", tmp_path / "out", "--baseline-depth", "2.5")
    assert report["references"]["constant 2.5 m baseline"]["abs_rel"] == pytest.approx(0.25)


def test_eval_runs_a_checkpoint_on_the_images(tmp_path: Path, tiny_moa_config: dict) -> None:
    from moa_depth_ros.checkpoint import save_checkpoint
    from moa_depth_ros.models import build_model

    checkpoint = save_checkpoint(build_model(tiny_moa_config), tmp_path / "tiny.safetensors")
    gt = depth_frames(2, height=24, width=32)
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, [], [])
    argv = ["eval", str(tmp_path / "bag"), "--image-topic", IMAGE, "--gt-topic", GT]
    argv += ["--checkpoint", str(checkpoint), "--device", "cpu", "--samples", "1"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["matched"] == 2 and report["counts"]["evaluated"] == 2
    assert np.isfinite(report["overall"]["abs_rel"])


# ------------------------------------------------------------------------------ errors


def test_missing_topic_lists_the_topics_present(tmp_path: Path, capsys) -> None:
    write_messages(tmp_path / "bag", _mixed_messages(2))
    code, _ = _eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("moa-depth-bag: error: topic '/camera/depth/ground_truth' is not in")
    assert "/camera/camera_info (sensor_msgs/msg/CameraInfo)" in err
    assert "/camera/image_raw (sensor_msgs/msg/Image)" in err
    assert "\n" not in err


def test_wrong_depth_encoding_is_an_error(tmp_path: Path, capsys) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    messages = [(t, T0, image_message(rgb, T0, "cam")) for t in (IMAGE, GT, PRED)]
    write_messages(tmp_path / "bag", messages)
    code, _ = _eval(tmp_path / "bag", tmp_path / "out")
    assert code == 2
    assert "has encoding 'rgb8'; depth must be one of 16UC1, 32FC1" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_one_clear_line(tmp_path: Path, storage: str, capsys) -> None:
    write_messages(tmp_path / "bag", _mixed_messages(20), storage)
    data_file = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    code = main(["info", str(tmp_path / "bag")])
    if code == 0:  # sqlite may open a half file; reading it must then fail cleanly
        code, _ = _eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("moa-depth-bag: error: cannot ") and f"'{tmp_path / 'bag'}'" in err
    assert "\n" not in err


def test_garbage_and_missing_bags(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.mcap").write_bytes(b"not a bag at all" * 10)
    assert main(["info", str(tmp_path / "junk.mcap")]) == 2
    assert "cannot open bag" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert f"bag '{tmp_path / 'nope'}' does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------ make-demo


def test_make_demo_bag_matches_the_generator(tmp_path: Path, capsys) -> None:
    from moa_depth_ros.ros.image_codec import image_msg_to_array, image_msg_to_rgb
    from training.synthetic import render_sequence

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
    from moa_depth_ros.ros.image_codec import image_msg_to_array
    from training.synthetic import render_sequence

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
        "from moa_depth_ros.ros.bag_cli import main\n"
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


def test_eval_works_without_ros(tmp_path: Path) -> None:
    gt = depth_frames(1)
    eval_bag(tmp_path / "bag", gt, [T0], gt, [T0])
    script = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces'):\n"
        "    sys.modules[name] = None\n"
        "from moa_depth_ros.ros.bag_cli import main\n"
        f"sys.exit(main(['eval', r'{tmp_path / 'bag'}', '--image-topic', '{IMAGE}', '--gt-topic',\n"
        f"              '{GT}', '--pred-topic', '{PRED}', '--out', r'{tmp_path / 'out'}']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ clouds, PLY


def test_cloud_arrays_and_ply_round_trip(tmp_path: Path) -> None:
    from moa_depth_ros.geometry import CameraIntrinsics

    depth = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    points = depth_to_points(depth, CameraIntrinsics(2, 2, 0.5, 0.5, 2, 2))
    data, step, fields = pack_cloud(points, rgb)
    store = typestore()
    field_type = store.types["sensor_msgs/msg/PointField"]
    cloud = store.types["sensor_msgs/msg/PointCloud2"](
        header=header(T0, "cam"),
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


def test_bag_error_is_raised_for_unknown_types(tmp_path: Path) -> None:
    from moa_depth_ros.ros.bag_io import add_topic, open_writer

    writer = open_writer(tmp_path / "bag")
    try:
        with pytest.raises(BagError, match="my_msgs/msg/Thing is not in the rosbags"):
            add_topic(writer, "/thing", "my_msgs/msg/Thing")
    finally:
        writer.close()


# ------------------------------------------------------------------------------ play/record


@pytest.mark.slow
def test_play_into_record_reproduces_messages_in_order(tmp_path: Path) -> None:
    """Two processes on a private ROS graph: record waits for publishers, play waits for the
    recorder; the recorded bag holds the same CDR bytes, per topic in the same order."""
    source = tmp_path / "source"
    write_messages(source, _mixed_messages(15), "sqlite3")
    env = ros_env(tmp_path)
    cli = [sys.executable, "-m", "moa_depth_ros.ros.bag_cli"]
    recorder = subprocess.Popen(
        [*cli, "record", "--topics", IMAGE, "camera/camera_info", "--out", str(tmp_path / "rec")]
        + ["--max-messages", "30", "--duration", "60", "--no-progress"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        player = subprocess.run(
            [*cli, "play", str(source), "--rate", "4", "--wait-subscribers", "30"]
            + ["--delay", "0.5", "--no-progress"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert player.returncode == 0, player.stderr
        assert "published 30 messages" in player.stdout
        out, _ = recorder.communicate(timeout=60)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, out
    assert "recorded 30 messages" in out
    # Subscribed with the publisher's reliability (rosbag2 does the same).
    assert f"{IMAGE}: 15 (sensor_msgs/msg/Image, reliable)" in out

    def per_topic(path: Path) -> dict[str, list[bytes]]:
        with BagReader(path) as reader:
            found: dict[str, list[bytes]] = {}
            for message in reader.messages():
                found.setdefault(message.topic, []).append(bytes(message.raw))
            return found

    recorded, played = per_topic(tmp_path / "rec"), per_topic(source)
    assert {t: len(m) for t, m in recorded.items()} == {t: len(m) for t, m in played.items()}
    for topic, messages in played.items():
        for sent, got in zip(messages, recorded[topic], strict=True):
            # The DDS layer pads the CDR payload to a multiple of 4 bytes; content is identical.
            assert got[: len(sent)] == sent and got[len(sent) :] == bytes(len(got) - len(sent))
            assert len(got) - len(sent) < 4
    with BagReader(tmp_path / "rec") as reader:
        assert reader.summary().storage == "mcap"
