"""Small bags written with rosbags for the bag tool tests, and an isolated ROS environment."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from moa_depth_ros.bags.io import open_writer
from moa_depth_ros.cli.bag import main as bag_cli
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, image_message, serialize
from tools.ros_graph import private_graph_environment

REPO = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND
PERIOD = SECOND // 10
GT, IMAGE, PRED = "/camera/depth/ground_truth", "/camera/image_raw", "/depth/image"


def mixed_messages(count: int) -> list[tuple[str, int, object]]:
    """``count`` small rgb8 images and camera_infos, received 1 and 2 µs after their stamps."""
    rng = np.random.default_rng(1)
    messages = []
    for i in range(count):
        stamp = T0 + i * PERIOD
        rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        messages.append((IMAGE, stamp + 1000, image_message(rgb, stamp, "cam")))
        info = camera_info_message({"fx": 5, "fy": 5, "cx": 4, "cy": 3}, 8, 6, stamp, "cam")
        messages.append(("/camera/camera_info", stamp + 2000, info))
    return messages


def run_eval(bag: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """``moa-depth-bag eval`` of PRED against GT; (exit code, report.json or {})."""
    argv = ["eval", str(bag), "--image-topic", IMAGE, "--gt-topic", GT, "--pred-topic", PRED]
    code = bag_cli([*argv, "--out", str(out), "--no-progress", *extra])
    report = out / "report.json"
    return code, json.loads(report.read_text()) if report.exists() else {}


def write_messages(
    path: Path, messages: Iterable[tuple[str, int, object]], storage: str = "mcap"
) -> None:
    """Write (topic, bag time ns, rosbags message) in the given order."""
    connections: dict[str, object] = {}
    with open_writer(path, storage) as writer:
        for topic, time_ns, message in messages:
            if topic not in connections:
                connections[topic] = writer.add_topic(topic, message.__msgtype__)
            writer.write(connections[topic], time_ns, serialize(message))


def depth_frames(count: int, height: int = 12, width: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Ground-truth-like depth maps, 0.5..5 m."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 5.0, (height, width)).astype(np.float32) for _ in range(count)]


def eval_bag(
    path: Path,
    gt: Sequence[np.ndarray],
    gt_stamps: Sequence[int],
    preds: Sequence[np.ndarray],
    pred_stamps: Sequence[int],
    pred_delay_ns: int = 30_000_000,
    storage: str = "mcap",
) -> None:
    """A bag with rgb8 images + ground truth at ``gt_stamps`` and predictions at
    ``pred_stamps``; prediction messages arrive ``pred_delay_ns`` later in bag time, as a
    node's output would (so pairing by receive time would be wrong)."""
    messages = []
    for depth, stamp in zip(gt, gt_stamps, strict=True):
        rgb = np.full((*depth.shape, 3), 128, dtype=np.uint8)
        messages.append(("/camera/image_raw", stamp, image_message(rgb, stamp, "cam")))
        messages.append(("/camera/depth/ground_truth", stamp, image_message(depth, stamp, "cam")))
    for depth, stamp in zip(preds, pred_stamps, strict=True):
        messages.append(("/depth/image", stamp + pred_delay_ns, image_message(depth, stamp, "cam")))
    messages.sort(key=lambda m: m[1])
    write_messages(path, messages, storage)


def ros_env(tmp: Path) -> dict[str, str]:
    """os.environ plus a private ROS graph: random domain, localhost-only discovery."""
    return private_graph_environment(tmp / "ros_log", pythonpath=[REPO], OMP_NUM_THREADS="1")
