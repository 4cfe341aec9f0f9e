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
