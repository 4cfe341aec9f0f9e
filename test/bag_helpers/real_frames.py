"""The real TUM RGB-D frames of test/fixtures/tum_fr3_teddy (see its README), and bags of them
written as a camera driver records them. Shared by test/test_real_frames.py and the training
test on real frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from moa_depth_ros.bags.io import open_writer
from moa_depth_ros.geometry import CameraIntrinsics
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, image_message, serialize

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tum_fr3_teddy"
TUM_DEPTH_SCALE = 5000  # TUM depth PNG value per metre
#: TUM fr3's colour camera at its native 640x480 (the fixture's README).
FULL = CameraIntrinsics(535.4, 539.2, 320.1, 247.6, 640, 480)
STEP = 4  # the fixture's depth is depth[::4, ::4] of the source
HEIGHT, WIDTH = 120, 160

IMAGE, INFO = "/camera/color/image_raw", "/camera/color/camera_info"
DEPTH, PRED = "/camera/aligned_depth_to_color/image_raw", "/depth/image"
MS = 1_000_000


@dataclass(frozen=True)
class RealFrame:
    rgb_stamp: int  # header stamps, ns: the sequence's own
    depth_stamp: int
    rgb: np.ndarray  # H×W×3 uint8 RGB
    raw: np.ndarray  # H×W uint16 TUM units (metres × 5000), 0 = no measurement
    pose: tuple[float, ...]  # tx ty tz qx qy qz qw: the colour camera in the world (mocap)

    def world_from_camera(self) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with world = R @ camera + t, camera in the optical frame (x right, y down)."""
        tx, ty, tz, qx, qy, qz, qw = self.pose
        rotation = np.array([
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
            [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
            [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
        ])  # fmt: skip
        return rotation, np.array([tx, ty, tz])

    @property
    def metres(self) -> np.ndarray:
        """float32 metres, NaN where the sensor measured nothing (REP 118)."""
        metres = self.raw / np.float32(TUM_DEPTH_SCALE)
        return np.where(self.raw > 0, metres, np.nan).astype(np.float32)

    @property
    def millimetres(self) -> np.ndarray:
        """uint16 millimetres (ROS 16UC1), 0 = no measurement; TUM's 0.2 mm steps rounded."""
        return np.rint(self.raw / (TUM_DEPTH_SCALE / 1000)).astype(np.uint16)

    @property
    def bag_metres(self) -> np.ndarray:
        """float32 metres as a reader of the 16UC1 bag gets them (mm / 1000), NaN in holes."""
        metres = self.millimetres.astype(np.float32) / np.float32(1000)
        return np.where(self.raw > 0, metres, np.nan).astype(np.float32)


def _stamp_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0"))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # cached and shared by every test
    return array


@cache
def real_frames() -> tuple[RealFrame, ...]:
    """The fixture's eight frames, in time order."""
    frames = []
    for line in (FIXTURE / "frames.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        rgb_stamp, rgb_file, depth_stamp, depth_file, _, *pose = line.split()
        bgr = cv2.imread(str(FIXTURE / rgb_file), cv2.IMREAD_COLOR)
        raw = cv2.imread(str(FIXTURE / depth_file), cv2.IMREAD_UNCHANGED)
        rgb = _read_only(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        stamps = _stamp_ns(rgb_stamp), _stamp_ns(depth_stamp)
        frames.append(RealFrame(*stamps, rgb, _read_only(raw), tuple(map(float, pose))))
    return tuple(frames)


def fixture_intrinsics() -> CameraIntrinsics:
    """The fixture's 160x120 intrinsics, as intrinsics.json records them."""
    k = json.loads((FIXTURE / "intrinsics.json").read_text())
    return CameraIntrinsics(k["fx"], k["fy"], k["cx"], k["cy"], k["width"], k["height"])


def write_real_bag(
    path: Path,
    frames: Sequence[RealFrame],
    storage: str = "mcap",
    prediction_scale: float | None = None,
) -> Path:
    """The frames as a camera driver records them: rgb8 colour and camera_info at the colour
    stamp, 16UC1 mm depth at its own stamp (each received 2 ms after its stamp), and with
    ``prediction_scale`` a 32FC1 prediction (the bag's depth × scale, NaN in its holes) at the
    colour stamp, received 30 ms later as a node's output would be."""
    k = fixture_intrinsics()
    info = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}
    messages = []
    for frame in frames:
        t, td = frame.rgb_stamp, frame.depth_stamp
        messages += [
            (IMAGE, t + 2 * MS, image_message(frame.rgb, t, "cam")),
            (INFO, t + 2 * MS, camera_info_message(info, WIDTH, HEIGHT, t, "cam")),
            (DEPTH, td + 2 * MS, image_message(frame.millimetres, td, "cam")),
        ]
        if prediction_scale is not None:
            pred = frame.bag_metres * np.float32(prediction_scale)
            messages.append((PRED, t + 30 * MS, image_message(pred, t, "cam")))
    messages.sort(key=lambda m: m[1])  # stable: a frame's messages keep their order
    connections: dict[str, object] = {}
    with open_writer(path, storage) as writer:
        for topic, time_ns, message in messages:
            if topic not in connections:
                connections[topic] = writer.add_topic(topic, message.__msgtype__)
            writer.write(connections[topic], time_ns, serialize(message))
    return path
