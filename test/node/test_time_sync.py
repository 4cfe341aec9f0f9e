"""ApproximateTimeSync: image-driven camera_info lookup by closest header stamp within slop."""

from __future__ import annotations

import random
import threading

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo

from moa_depth_ros.msgs.stamps import stamp_to_ns
from moa_depth_ros.node.time_sync import ApproximateTimeSync

NS = 1_000_000_000
PERIOD = NS // 30  # 30 Hz camera


def info(stamp_ns: int, tag: int = 0) -> CameraInfo:
    msg = CameraInfo(width=640 + tag)  # width tags the message so tests can tell them apart
    msg.header.stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return msg


def test_stamp_to_ns():
    assert stamp_to_ns(Time(sec=3, nanosec=7)) == 3 * NS + 7
    assert stamp_to_ns(Time()) == 0


def test_empty_buffer_matches_nothing():
    sync = ApproximateTimeSync()
    assert sync.match(5 * NS) is None and len(sync) == 0


def test_pairs_each_image_with_its_jittered_info():
    rng = random.Random(0)
    t0 = 1_700_000_000 * NS
    sync = ApproximateTimeSync(slop=0.01, queue_size=10)
    for i in range(50):
        sync.add_info(info(t0 + i * PERIOD + rng.randint(-3_000_000, 3_000_000), tag=i))
        image_stamp = t0 + i * PERIOD + rng.randint(-2_000_000, 2_000_000)
        assert sync.match(image_stamp).width == 640 + i


def test_out_of_order_arrival_still_picks_closest_stamp():
    t0 = 100 * NS
    stamps = [t0 + i * PERIOD for i in range(8)]
    order = list(range(8))
    random.Random(1).shuffle(order)
    sync = ApproximateTimeSync(slop=0.02, queue_size=8)
    for i in order:
        sync.add_info(info(stamps[i], tag=i))
    for i, stamp in enumerate(stamps):
        assert sync.match(stamp + 4_000_000).width == 640 + i
    # An image that arrives before its own camera_info pairs with the neighbour if within slop.
    assert sync.match(stamps[-1] + PERIOD - 14_000_000).width == 640 + 7
    assert sync.match(stamps[-1] + PERIOD) is None


def test_slop_boundary_is_inclusive():
    t = 50 * NS
    sync = ApproximateTimeSync(slop=0.01)
    sync.add_info(info(t))
    assert sync.match(t + 10_000_000) is not None
    assert sync.match(t - 10_000_000) is not None
    assert sync.match(t + 10_000_001) is None
    assert sync.match(t - 10_000_001) is None
    exact = ApproximateTimeSync(slop=0.0)
    exact.add_info(info(t))
    assert exact.match(t) is not None and exact.match(t + 1) is None


def test_match_does_not_consume_and_ties_prefer_latest_received():
    sync = ApproximateTimeSync(slop=0.1)
    sync.add_info(info(10 * NS - 5, tag=1))
    sync.add_info(info(10 * NS + 5, tag=2))
    assert sync.match(10 * NS).width == 642
    assert sync.match(10 * NS).width == 642  # still there
    assert len(sync) == 2


def test_eviction_keeps_most_recently_received():
    sync = ApproximateTimeSync(slop=0.001, queue_size=3)
    for i in range(5):
        sync.add_info(info(i * NS, tag=i))
    assert len(sync) == 3
    assert sync.match(0) is None and sync.match(1 * NS) is None
    assert [sync.match(i * NS).width for i in (2, 3, 4)] == [642, 643, 644]


def test_recovers_when_stamps_jump_back_like_a_looped_bag():
    sync = ApproximateTimeSync(slop=0.001, queue_size=3)
    for i in range(100, 105):
        sync.add_info(info(i * NS, tag=i))
    for i in range(3):  # replay restarts at t = 0
        sync.add_info(info(i * NS, tag=i))
    assert [sync.match(i * NS).width for i in range(3)] == [640, 641, 642]
    assert sync.match(104 * NS) is None


def test_clear():
    sync = ApproximateTimeSync()
    sync.add_info(info(NS))
    sync.clear()
    assert len(sync) == 0 and sync.match(NS) is None


@pytest.mark.parametrize("kwargs", [dict(slop=-0.1), dict(slop=float("nan")), dict(queue_size=0)])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ApproximateTimeSync(**kwargs)


def test_concurrent_add_and_match():
    sync = ApproximateTimeSync(slop=1.0, queue_size=5)
    errors: list[BaseException] = []

    def producer():
        try:
            for i in range(2000):
                sync.add_info(info(i * PERIOD))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def consumer():
        try:
            for i in range(2000):
                sync.match(i * PERIOD)
                assert len(sync) <= 5
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (producer, producer, consumer, consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sync.match(1999 * PERIOD) is not None
