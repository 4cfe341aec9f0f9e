"""A synthetic camera bag: RGB images, camera_info and ground-truth depth from a moving camera.

The frames come from ``moa_depth_ros.synthetic.render_sequence`` (exact ray-cast depth), the
same generator the training package writes its synthetic datasets with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moa_depth_ros.bags.io import open_writer
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, image_message, serialize
from moa_depth_ros.synthetic import render_sequence

__all__ = ["DemoTopics", "write_demo_bag"]

FRAME_ID = "camera_optical_frame"
#: Stamp of the first frame: a fixed instant, so the same arguments write the same bag.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000


@dataclass(frozen=True)
class DemoTopics:
    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    ground_truth: str = "/camera/depth/ground_truth"


def write_demo_bag(
    out: str | Path,
    frames: int = 60,
    width: int = 320,
    height: int = 240,
    rate_hz: float = 10.0,
    seed: int = 0,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    rooms: int = 1,
    topics: DemoTopics = DemoTopics(),
    start_ns: int = DEFAULT_START_NS,
    on_frame: Callable[[], None] | None = None,
) -> int:
    """Write ``frames`` synchronized frames stamped at ``rate_hz``; returns the message count.

    Per frame: rgb8 Image, CameraInfo (K/P from the generator's intrinsics) and 32FC1 ground
    truth, all with the same header (stamp, ``camera_optical_frame``); bag time = stamp.
    With ``rooms`` > 1 the camera loops through rooms ``seed``, ``seed + 1``, ... in turn
    (frames split evenly): one room says little about a metric-depth model, because a room
    whose size happens to match a constant guess flatters that guess.
    """
    if frames < 1 or width < 1 or height < 1 or not rate_hz > 0 or not 1 <= rooms <= frames:
        raise ValueError(
            f"need frames, width, height >= 1, rate > 0 and 1 <= rooms <= frames, got "
            f"{frames}, {width}, {height}, {rate_hz}, {rooms}"
        )
    period_ns = round(1e9 / rate_hz)
    per_room = [frames // rooms + (room < frames % rooms) for room in range(rooms)]
    sequence = (
        view
        for room, count in enumerate(per_room)
        for view in render_sequence(seed + room, count, width, height)
    )
    with open_writer(out, storage) as writer:
        image_conn = writer.add_topic(topics.image, "sensor_msgs/msg/Image")
        info_conn = writer.add_topic(topics.camera_info, "sensor_msgs/msg/CameraInfo")
        depth_conn = writer.add_topic(topics.ground_truth, "sensor_msgs/msg/Image")
        for index, (rgb, depth, intrinsics) in enumerate(sequence):
            stamp = start_ns + index * period_ns
            messages = (
                (image_conn, image_message(rgb, stamp, FRAME_ID)),
                (info_conn, camera_info_message(intrinsics, width, height, stamp, FRAME_ID)),
                (depth_conn, image_message(depth.astype("float32"), stamp, FRAME_ID)),
            )
            for connection, message in messages:
                writer.write(connection, stamp, serialize(message))
            if on_frame is not None:
                on_frame()
    return 3 * frames
