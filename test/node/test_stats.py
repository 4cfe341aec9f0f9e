"""Rates, percentiles and counters of the node."""

from __future__ import annotations

import pytest

from moa_depth_ros.node.stats import NodeStats, RateMeter, percentile


def test_rate_meter_and_percentiles() -> None:
    now = [100.0]
    meter = RateMeter(window_s=2.0, clock=lambda: now[0])
    for _ in range(10):  # 10 Hz for 1 s
        now[0] += 0.1
        meter.tick()
    assert meter.rate() == pytest.approx(10.0)
    now[0] += 5.0  # the stream stopped
    assert meter.rate() == 0.0
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_stats_report_camera_info_going_missing_once() -> None:
    stats = NodeStats()
    assert stats.camera_info_matched(True) is False
    assert stats.camera_info_matched(False) is True  # just went missing: warn
    assert stats.camera_info_matched(False) is False  # still missing: stay quiet
    assert stats.camera_info_matched(True) is False
    assert stats.camera_info_matched(False) is True
    snap = stats.snapshot()
    assert snap.camera_info_missing == 3 and snap.camera_info_missing_now
