"""Header stamps as integer nanoseconds (rclpy and rosbags messages alike; no ROS import)."""

from __future__ import annotations

from typing import Any

__all__ = ["header_stamp_ns", "stamp_to_ns"]


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (rclpy or rosbags) → integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` in integer nanoseconds."""
    return stamp_to_ns(msg.header.stamp)
