"""Diagnostics levels and summaries from stats snapshots."""

from __future__ import annotations

from moa_depth_ros.node.diagnostics import Level, assess
from moa_depth_ros.node.stats import NodeStats


def test_diagnostic_levels() -> None:
    stats = NodeStats()
    assert assess(stats.snapshot(), "unconfigured")[0] == Level.ERROR
    level, message = assess(stats.snapshot(), "unconfigured", "x.safetensors: not found")
    assert level == Level.ERROR and "x.safetensors" in message
    assert assess(stats.snapshot(), "inactive")[0] == Level.OK
    assert assess(stats.snapshot(), "active")[0] == Level.OK
    stats.message_rejected("image: unknown image encoding 'foo'")
    level, message = assess(stats.snapshot(), "active")
    assert level == Level.WARN and "unknown image encoding" in message
    assert assess(stats.snapshot(), "active", recent_s=0.0)[0] == Level.OK  # no longer recent
    stats.camera_info_matched(False)
    assert assess(stats.snapshot(), "active", recent_s=0.0)[0] == Level.WARN


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_images_far_below_the_camera_info_rate_warn_with_the_fix() -> None:
    clock = _Clock()
    stats = NodeStats(clock=clock)
    for tick in range(50):  # 5 s: camera_info at 10 Hz, images at 1 Hz
        clock.now = tick * 0.1
        stats.camera_info_received()
        if tick % 10 == 0:
            stats.message_received()
    clock.now = 5.0
    snapshot = stats.snapshot()
    # 5 s windows: 49 camera_infos and 4 images after the one at t = 0
    assert snapshot.camera_info_rate_hz == 9.8 and snapshot.input_rate_hz == 0.8
    level, message = assess(snapshot, "active", recent_s=0.0)
    assert level == Level.WARN
    assert "images arrive at 0.8 Hz but camera_info at 9.8 Hz" in message
    assert "fastdds_large_shm.xml" in message and "publisher too" in message
    for tick in range(50, 100):  # images back at the camera_info rate: OK again
        clock.now = tick * 0.1
        stats.camera_info_received()
        stats.message_received()
    assert "images arrive" not in assess(stats.snapshot(), "active", recent_s=0.0)[1]


def test_rejected_camera_info_is_counted_and_warns() -> None:
    stats = NodeStats()
    stats.camera_info_rejected("camera_info describes a 100x1000 image, ...")
    snapshot = stats.snapshot()
    assert snapshot.camera_info_rejected == 1
    level, message = assess(snapshot, "active")
    assert (
        level == Level.WARN and "camera_info rejected: camera_info describes a 100x1000" in message
    )
