"""One camera's live anchoring (node.anchors) without a ROS graph: real messages in, the
anchored depth and the counters out."""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from moa_depth_ros.anchoring import sparse_subset
from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
from moa_depth_ros.msgs.image_codec import depth_to_image_msg
from moa_depth_ros.msgs.pointcloud import make_pointcloud2, pack_cloud
from moa_depth_ros.node.anchors import CameraAnchoring
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


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_one_percent_of_metric_depth_fixes_the_scale(encoding: str) -> None:
    anchoring = CameraAnchoring(settings())
    assert anchoring.receive_depth(anchor_msg(1_000, ANCHORS, encoding)) is None
    out = anchoring.anchor(WRONG, FRAME, 1_000, None, settings())
    assert abs_rel(WRONG) == pytest.approx(0.7, abs=1e-5)
    assert abs_rel(out) < 0.005  # 16UC1 rounds the anchors to millimetres
    snap = anchoring.snapshot()
    assert snap.outcomes == {"anchored": 1} and snap.problem == ""
    assert snap.applied.scale == pytest.approx(1 / 1.7, rel=2e-3)
    values = snap.values()
    assert values["anchor_frames_anchored"] == "1" and values["anchors_received"] == "1"
    assert int(values["anchor_points"]) == int(np.isfinite(ANCHORS).sum())


def test_a_point_cloud_in_the_optical_frame_anchors_through_camera_info() -> None:
    anchoring = CameraAnchoring(settings())
    assert anchoring.receive_points(cloud_msg(5, ANCHORS)) is None
    assert anchoring.anchor(WRONG, FRAME, 5, None, settings()) is not None
    assert anchoring.snapshot().outcomes == {"no_camera_info": 1}
    out = anchoring.anchor(WRONG, FRAME, 5, K, settings())
    assert abs_rel(out) < 1e-4
    assert anchoring.snapshot().outcomes["anchored"] == 1


def test_frames_without_usable_anchors_keep_the_last_fit_and_are_counted() -> None:
    anchoring = CameraAnchoring(settings())
    s = settings()
    np.testing.assert_array_equal(anchoring.anchor(WRONG, FRAME, 0, None, s), WRONG)  # none yet
    anchoring.receive_depth(anchor_msg(10**9, ANCHORS))
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
    }
    for second, (outcome, msg) in enumerate(cases.items(), start=2):
        assert anchoring.receive_depth(msg) is None
        out = anchoring.anchor(WRONG, FRAME, second * 10**9, None, s)
        assert abs_rel(out) < 0.01, outcome  # still the good fit
        snap = anchoring.snapshot()
        assert snap.outcomes[outcome] == 1 and snap.problem, outcome
        assert snap.applied == good
    anchoring.anchor(WRONG, FRAME, 9 * 10**9, None, s)
    assert anchoring.snapshot().outcomes["missing"] == 2  # the first frame and this one
    # The anchor of frame 9 s arrives after it was published: late, counted once.
    anchoring.receive_depth(anchor_msg(9 * 10**9 + 1_000, ANCHORS))
    anchoring.receive_depth(anchor_msg(9 * 10**9 + 2_000, ANCHORS))
    assert anchoring.snapshot().late == 1


def test_malformed_anchor_messages_are_rejected_with_a_reason() -> None:
    anchoring = CameraAnchoring(settings())
    colour = depth_to_image_msg(ANCHORS, header(1))
    colour.encoding = "rgb8"
    reason = anchoring.receive_depth(colour)
    assert reason is not None and "rgb8" in reason
    truncated = anchor_msg(2, ANCHORS)
    truncated.data = truncated.data[:100]
    assert anchoring.receive_depth(truncated) is not None
    cloud = cloud_msg(3, ANCHORS)
    cloud.fields = cloud.fields[:2]  # no z
    assert "z" in anchoring.receive_points(cloud)
    snap = anchoring.snapshot()
    assert (snap.received, snap.rejected) == (3, 3) and snap.seconds_since_reject < 5


def test_scale_shift_smoothing_and_hole_fill() -> None:
    affine = (TRUTH - 0.4) / 1.3
    s = settings(anchor_mode="scale_shift", anchor_smoothing=0.5, anchor_fill="holes")
    anchoring = CameraAnchoring(s)
    for stamp in (1, 2):
        anchoring.receive_depth(anchor_msg(stamp * 10**9, ANCHORS))
        out = anchoring.anchor(affine, FRAME, stamp * 10**9, None, s)
    fit = anchoring.snapshot().applied
    assert fit.scale == pytest.approx(1.3, rel=1e-3) and fit.shift == pytest.approx(0.4, abs=2e-3)
    valid = np.isfinite(ANCHORS)
    np.testing.assert_array_equal(out[valid], ANCHORS[valid])  # passed through
    assert abs_rel(out) < 0.005
    # Smoothing: a second sensor reading twice as far moves the fit half way.
    anchoring.receive_depth(anchor_msg(3 * 10**9, ANCHORS * 2))
    anchoring.anchor(affine, FRAME, 3 * 10**9, None, s)
    assert anchoring.snapshot().applied.scale == pytest.approx((1.3 + 2.6) / 2, rel=1e-3)


def test_diagnostics_warn_when_a_frame_was_not_anchored() -> None:
    from moa_depth_ros.node.diagnostics import Level, assess_anchoring

    anchoring = CameraAnchoring(settings())
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
    anchoring.receive_depth(bad)
    level, message = assess_anchoring(anchoring.snapshot(), "active", Level.OK, "active")
    assert level == Level.WARN and "rejecting anchors: metric_depth: encoding 'rgb8'" in message
