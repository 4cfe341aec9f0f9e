"""moa-depth-bag play -> record through real rclpy in separate processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bag_helpers.bags import (
    IMAGE,
    REPO,
    mixed_messages,
    ros_env,
    write_messages,
)

from moa_depth_ros.bags.io import BagReader


@pytest.mark.slow
def test_play_into_record_reproduces_messages_in_order(tmp_path: Path) -> None:
    """Two processes on a private ROS graph: record waits for publishers, play waits for the
    recorder; the recorded bag holds the same CDR bytes, per topic in the same order."""
    source = tmp_path / "source"
    write_messages(source, mixed_messages(15), "sqlite3")
    env = ros_env(tmp_path)
    cli = [sys.executable, "-m", "moa_depth_ros.cli.bag"]
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
