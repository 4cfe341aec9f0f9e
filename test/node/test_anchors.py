"""One camera's live anchoring (node.anchors) without a ROS graph: real messages in, the
anchored depth, the counters and the log lines out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from moa_depth_ros.anchoring import sparse_subset
from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
from moa_depth_ros.msgs.image_codec import depth_to_image_msg
from moa_depth_ros.msgs.pointcloud import make_pointcloud2, pack_cloud
from moa_depth_ros.node.anchors import ANCHOR_BUFFER, FAR_OFF_S, CameraAnchoring
from moa_depth_ros.node.params import PARAMETERS, NodeSettings

H, W = 60, 80
FRAME = "camera_optical"
K = CameraIntrinsics(fx=70.0, fy=70.0, cx=39.5, cy=29.5, width=W, height=H)
TRUTH = np.random.default_rng(0).uniform(0.8, 5.0, (H, W)).astype(np.float32)
WRONG = TRUTH * 1.7  # the model's depth: 1.7 times too far


def settings(**overrides) -> NodeSettings:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update({"anchor_mode": "scale", "anchor_smoothing": 0.0, "max_depth": 20.0})
    values.update(overrides)
    return NodeSettings.from_values(values)


def header(stamp_ns: int, frame_id: str = FRAME) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 10**9)
    return h


def anchor_msg(stamp_ns: int, depth: np.ndarray, encoding: str = "32FC1", frame_id: str = FRAME):
    return depth_to_image_msg(np.nan_to_num(depth, nan=0.0), header(stamp_ns, frame_id), encoding)


def cloud_msg(stamp_ns: int, depth: np.ndarray):
    buffer, step, fields = pack_cloud(depth_to_points(depth, K))
    return make_pointcloud2(header(stamp_ns), buffer, W, H, step, fields)


def abs_rel(depth: np.ndarray) -> float:
    return float(np.mean(np.abs(depth - TRUTH) / TRUTH))


ANCHORS = sparse_subset(TRUTH, 0.01, np.random.default_rng(1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make() -> Iterator:
    """CameraAnchoring(settings, **kwargs), closed after the test (its decoder thread)."""
    made: list[CameraAnchoring] = []

    def build(s: NodeSettings | None = None, **kwargs) -> CameraAnchoring:
        made.append(CameraAnchoring(s or settings(), **kwargs))
        return made[-1]

    yield build
    for anchoring in made:
        anchoring.close()


def receive(anchoring: CameraAnchoring, *messages) -> None:
    """Hand messages to the callbacks and wait for the decoder."""
    for msg in messages:
        if hasattr(msg, "encoding"):
            anchoring.receive_depth(msg)
        else:
            anchoring.receive_points(msg)
    assert anchoring.drain(10.0)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_one_percent_of_metric_depth_fixes_the_scale(make, encoding: str) -> None:
    anchoring = make()
    receive(anchoring, anchor_msg(1_000, ANCHORS, encoding))
    out = anchoring.anchor(WRONG, FRAME, 1_000, None, settings())
    assert abs_rel(WRONG) == pytest.approx(0.7, abs=1e-5)
    assert abs_rel(out) < 0.005  # 16UC1 rounds the anchors to millimetres
    snap = anchoring.snapshot()
    assert snap.outcomes == {"anchored": 1} and snap.problem == ""
    assert snap.applied.scale == pytest.approx(1 / 1.7, rel=2e-3)
    values = snap.values()
    assert values["anchor_frames_anchored"] == "1" and values["anchors_received"] == "1"
    assert int(values["anchor_points"]) == int(np.isfinite(ANCHORS).sum())
    assert values["anchor_frames_out_of_bounds"] == values["anchor_frames_far_off"] == "0"


def test_a_point_cloud_in_the_optical_frame_anchors_through_camera_info(make) -> None:
    anchoring = make()
    receive(anchoring, cloud_msg(5, ANCHORS))
    assert anchoring.anchor(WRONG, FRAME, 5, None, settings()) is not None
    assert anchoring.snapshot().outcomes == {"no_camera_info": 1}
    out = anchoring.anchor(WRONG, FRAME, 5, K, settings())
    assert abs_rel(out) < 1e-4
    assert anchoring.snapshot().outcomes["anchored"] == 1


def test_clouds_after_the_first_frame_are_kept_as_projected_depth_only(make, monkeypatch) -> None:
    """Once the decoder knows the camera's intrinsics (from a frame), a cloud is projected on
    arrival and only its sparse depth is kept; the worker projects nothing."""
    anchoring = make()
    anchoring.anchor(WRONG, FRAME, 1, K, settings())  # the first frame: intrinsics known
    receive(anchoring, cloud_msg(5, ANCHORS))
    assert anchoring.buffered_bytes() == H * W * 4  # one H×W float32 image, no points
    from moa_depth_ros.node import anchors

    def not_in_the_worker(*args, **kwargs):
        raise AssertionError("the worker projected a cloud")

    monkeypatch.setattr(anchors, "points_to_depth", not_in_the_worker)
    out = anchoring.anchor(WRONG, FRAME, 5, K, settings())
    assert abs_rel(out) < 1e-4 and anchoring.snapshot().outcomes["anchored"] == 1
    # A frame whose camera_info changed cannot use a cloud projected with the old one.
    other = CameraIntrinsics(fx=90.0, fy=90.0, cx=39.5, cy=29.5, width=W, height=H)
    anchoring.anchor(WRONG, FRAME, 5, other, settings())
    assert anchoring.snapshot().outcomes["no_camera_info"] == 1


def test_frames_without_usable_anchors_keep_the_last_fit_and_are_counted(make) -> None:
    clock = Clock()
    anchoring = make(clock=clock)
    s = settings()
    np.testing.assert_array_equal(anchoring.anchor(WRONG, FRAME, 0, None, s), WRONG)  # none yet
    receive(anchoring, anchor_msg(10**9, ANCHORS))
    anchoring.anchor(WRONG, FRAME, 10**9, None, s)
    good = anchoring.snapshot().applied
    cases = {
        "wrong_frame": anchor_msg(2 * 10**9, ANCHORS, frame_id="lidar"),
        "wrong_size": anchor_msg(3 * 10**9, ANCHORS[:30, :40]),
        "too_few_points": anchor_msg(4 * 10**9, np.full((H, W), np.nan, np.float32)),
        "unstable": anchor_msg(
            5 * 10**9,
            np.where(np.isfinite(ANCHORS), 0.5, np.nan)
            * np.random.default_rng(2).uniform(0.2, 5, (H, W)),
        ),
        # A sensor reading 3x too far: a fine fit, but 3x the smoothed one.
        "out_of_bounds": anchor_msg(6 * 10**9, np.clip(ANCHORS * 3, None, 19.0)),
    }
    for second, (outcome, msg) in enumerate(cases.items(), start=2):
        receive(anchoring, msg)
        out = anchoring.anchor(WRONG, FRAME, second * 10**9, None, s)
        assert abs_rel(out) < 0.01, outcome  # still the good fit
        snap = anchoring.snapshot()
        assert snap.outcomes[outcome] == 1 and snap.problem, outcome
        assert snap.applied == good
    assert "is 3x the smoothed 0.588" in snap.problem
    clock.now += 10  # the sensor went quiet (else its stamps, 3 s off, would be far_off)
    anchoring.anchor(WRONG, FRAME, 9 * 10**9, None, s)
    assert anchoring.snapshot().outcomes["missing"] == 2  # the first frame and this one
    # The anchor of frame 9 s arrives after it was published: late, counted once.
    receive(
        anchoring, anchor_msg(9 * 10**9 + 1_000, ANCHORS), anchor_msg(9 * 10**9 + 2_000, ANCHORS)
    )
    assert anchoring.snapshot().late == 1


def test_anchors_of_1e30_or_float32_limits_are_invalid_pixels_and_never_nan(make) -> None:
    """The adversarial frames of docs/anchoring.md: through the node's path the published
    depth stays the good fit's, finite everywhere."""
    anchoring = make()
    s = settings()
    receive(anchoring, anchor_msg(10**9, ANCHORS))
    good = anchoring.anchor(WRONG, FRAME, 10**9, None, s)
    for second, factor in ((2, 6.7e29), (3, 5e37)):
        receive(anchoring, anchor_msg(second * 10**9, ANCHORS * np.float32(factor)))
        out = anchoring.anchor(WRONG, FRAME, second * 10**9, None, s)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out, good)
    assert anchoring.snapshot().outcomes == {"anchored": 1, "too_few_points": 2}


def test_malformed_anchor_messages_are_rejected_with_a_reason(make) -> None:
    anchoring = make()
    colour = depth_to_image_msg(ANCHORS, header(1))
    colour.encoding = "rgb8"
    truncated = anchor_msg(2, ANCHORS)
    truncated.data = truncated.data[:100]
    no_z = cloud_msg(3, ANCHORS)
    no_z.fields = no_z.fields[:2]
    receive(anchoring, colour, truncated, no_z)
    snap = anchoring.snapshot()
    assert (snap.received, snap.rejected) == (3, 3) and snap.seconds_since_reject < 5
    assert snap.last_reject_reason.startswith("metric_points: point cloud has no x, y, z fields")
    # A field beyond point_step is named with the layout, not numpy's dtype complaint.
    short = cloud_msg(4, ANCHORS)
    short.point_step, short.row_step = 8, 8 * W
    receive(anchoring, short)
    reason = anchoring.snapshot().last_reject_reason
    assert reason == (
        "metric_points: point field 'z' at offset 8 (1 x 4 B) does not fit in point_step 8; "
        "fields x@0 float32, y@4 float32, z@8 float32, point_step 8"
    )


def test_scale_shift_smoothing_and_hole_fill(make) -> None:
    affine = (TRUTH - 0.4) / 1.3
    s = settings(anchor_mode="scale_shift", anchor_smoothing=0.5, anchor_fill="holes")
    anchoring = make(s)
    for stamp in (1, 2):
        receive(anchoring, anchor_msg(stamp * 10**9, ANCHORS))
        out = anchoring.anchor(affine, FRAME, stamp * 10**9, None, s)
    fit = anchoring.snapshot().applied
    assert fit.scale == pytest.approx(1.3, rel=1e-3) and fit.shift == pytest.approx(0.4, abs=2e-3)
    valid = np.isfinite(ANCHORS)
    np.testing.assert_array_equal(out[valid], ANCHORS[valid])  # passed through
    assert abs_rel(out) < 0.005
    # Smoothing: a second sensor reading 1.5 times as far moves the fit half way.
    receive(anchoring, anchor_msg(3 * 10**9, ANCHORS * 1.5))
    anchoring.anchor(affine, FRAME, 3 * 10**9, None, s)
    assert anchoring.snapshot().applied.scale == pytest.approx((1.3 + 1.95) / 2, rel=1e-3)


def test_diagnostics_warn_when_a_frame_was_not_anchored(make) -> None:
    from moa_depth_ros.node.diagnostics import Level, assess_anchoring

    anchoring = make()
    fine = anchoring.snapshot()
    assert assess_anchoring(fine, "active", Level.OK, "active") == (Level.OK, "active")
    anchoring.anchor(WRONG, FRAME, 1, None, settings())  # no anchor within the slop
    missing = anchoring.snapshot()
    level, message = assess_anchoring(missing, "active", Level.OK, "active")
    assert level == Level.WARN and message.startswith("not anchored: no metric anchor")
    level, message = assess_anchoring(missing, "active", Level.WARN, "rejecting input: x")
    assert level == Level.WARN and message.startswith("rejecting input: x; not anchored")
    assert assess_anchoring(missing, "inactive", Level.OK, "idle") == (Level.OK, "idle")
    assert assess_anchoring(missing, "active", Level.ERROR, "no model") == (Level.ERROR, "no model")
    bad = anchor_msg(3, ANCHORS)
    bad.encoding = "rgb8"
    receive(anchoring, bad)
    level, message = assess_anchoring(anchoring.snapshot(), "active", Level.OK, "active")
    assert level == Level.WARN and "rejecting anchors: metric_depth: encoding 'rgb8'" in message


def test_anchors_on_another_clock_are_far_off_not_missing(make) -> None:
    clock = Clock()
    anchoring = make(clock=clock)
    receive(anchoring, anchor_msg(1_000 * 10**9, ANCHORS))  # sim time, say
    stamp = 1_700_000_000 * 10**9  # the camera's wall-clock stamp
    anchoring.anchor(WRONG, FRAME, stamp, None, settings())
    snap = anchoring.snapshot()
    assert snap.outcomes == {"far_off": 1}
    assert snap.problem.startswith("the newest anchor's stamp is -1699999000.000 s from")
    assert snap.values()["anchor_frames_far_off"] == "1"
    # Near (but beyond the slop), or a sensor that went quiet: missing.
    anchoring.anchor(WRONG, FRAME, 1_000 * 10**9 + int(FAR_OFF_S * 0.9e9), None, settings())
    clock.now += 10.0
    anchoring.anchor(WRONG, FRAME, stamp, None, settings())
    assert anchoring.snapshot().outcomes == {"far_off": 1, "missing": 2}


def test_each_kind_of_problem_is_logged_once_per_period(make) -> None:
    clock, lines = Clock(), []
    anchoring = make(log=lines.append, clock=clock)
    bad = anchor_msg(1, ANCHORS)
    bad.encoding = "rgb8"
    for second in range(3):  # three frames of each kind within one period
        stamp = (second + 1) * 10**9
        receive(anchoring, bad, anchor_msg(stamp, ANCHORS, frame_id="lidar"))
        anchoring.anchor(WRONG, FRAME, stamp, None, settings())
        anchoring.anchor(WRONG, FRAME, stamp + 10**8, None, settings())  # missing
    assert lines == [
        "rejected an anchor message: metric_depth: encoding 'rgb8' is not a depth encoding "
        "(16UC1 mm or 32FC1 m)",
        "not anchored (wrong_frame): anchor frame_id 'lidar' is not the image's 'camera_optical'",
        "not anchored (missing): no metric anchor within anchor_slop of the image stamp (0.05 s)",
    ]
    clock.now += 5.0
    anchoring.anchor(WRONG, FRAME, 99 * 10**9, None, settings())
    assert len(lines) == 4 and lines[-1].startswith("not anchored (missing)")


def big_cloud(stamp_ns: int, count: int) -> object:
    """An unorganized cloud of ``count`` points of the scene (TRUTH's cloud, repeated)."""
    scene = depth_to_points(TRUTH, K).reshape(-1, 3)
    points = np.resize(scene, (count, 3))[None]
    buffer, step, fields = pack_cloud(points)
    return make_pointcloud2(header(stamp_ns), buffer, count, 1, step, fields)


def test_buffered_anchor_memory_is_bounded_by_anchor_max_points(make) -> None:
    count, kept = 301_000, 1_000  # every 301st point: 1000 distinct pixels of the 4800
    anchoring = make(settings(anchor_max_points=kept))
    clouds = [big_cloud(i * 10**8, count) for i in range(ANCHOR_BUFFER + 5)]
    for cloud in clouds:
        receive(anchoring, cloud)  # one at a time: none dropped by the queue
    snap = anchoring.snapshot()
    assert (snap.received, snap.rejected, snap.dropped) == (len(clouds), 0, 0)
    assert snap.points_dropped == len(clouds) * (count - kept)
    # 30 buffered clouds of 1000 x 3 float32 each, whatever came in (3.6 MB each here).
    assert anchoring.buffered_bytes() == ANCHOR_BUFFER * kept * 3 * 4
    out = anchoring.anchor(WRONG, FRAME, 34 * 10**8, K, settings())  # the thinned cloud anchors
    assert anchoring.snapshot().outcomes == {"anchored": 1} and np.isfinite(out).all()


def test_a_ten_million_point_cloud_does_not_hold_up_the_callback(make) -> None:
    """The callback only queues; the decoder reads x, y, z of every 100th point. Before, the
    callback decoded all 10 M points on the executor thread (0.51 s for this message on the
    2-core test machine) and kept 120 MB of them."""
    count = 10_000_000
    step = 16
    xyz = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
           for i, n in enumerate("xyz")]  # fmt: skip
    cloud = SimpleNamespace(
        header=header(10**9), height=1, width=count, fields=xyz, is_bigendian=False,
        point_step=step, row_step=count * step, is_dense=True,
        data=np.zeros(count * step, np.uint8),  # untouched pages: no 160 MB resident
    )  # fmt: skip
    anchoring = make(settings(anchor_max_points=100_000))
    start = time.perf_counter()
    anchoring.receive_points(cloud)
    anchoring.receive_depth(anchor_msg(10**9, ANCHORS))
    queued = time.perf_counter() - start
    assert anchoring.drain(10.0)
    assert queued < 0.05, queued
    assert anchoring.snapshot().points_dropped == count - 100_000
    assert anchoring.buffered_bytes() == ANCHORS.nbytes  # z = 0 points: nothing worth keeping


def test_anchor_messages_beyond_the_queue_are_dropped_and_counted(make) -> None:
    from moa_depth_ros.node.anchors import DECODE_QUEUE

    release = threading.Event()

    class Stuck:  # a message the decoder is busy with until released
        @property
        def header(self):
            release.wait(10.0)
            raise ValueError("stuck message")

    clock = Clock()
    anchoring = make(clock=clock)
    anchoring.receive_depth(Stuck())
    assert not anchoring.drain(0.2)  # the decoder is busy with it
    for stamp in range(1, DECODE_QUEUE + 3):  # two more than the queue holds
        anchoring.receive_depth(anchor_msg(stamp * 10**9, ANCHORS))
    release.set()
    assert anchoring.drain()
    snap = anchoring.snapshot()
    assert (snap.received, snap.dropped, snap.rejected) == (DECODE_QUEUE + 3, 2, 1)
    # The newest survived: stamps 3 ... DECODE_QUEUE + 2 are buffered, 1 and 2 are not.
    anchoring.anchor(WRONG, FRAME, (DECODE_QUEUE + 2) * 10**9, None, settings())
    clock.now += 10
    anchoring.anchor(WRONG, FRAME, 10**9, None, settings())
    assert anchoring.snapshot().outcomes == {"anchored": 1, "missing": 1}
