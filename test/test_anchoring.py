"""Metric anchoring: robust fits on sparse anchors, smoothing, hole filling, projection."""

from __future__ import annotations

import numpy as np
import pytest

from moa_depth_ros.anchoring import (
    AnchorTracker,
    apply_anchor,
    fit_anchor,
    points_to_depth,
    sparse_subset,
)
from moa_depth_ros.evaluation.metrics import compute_depth_metrics
from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points

RNG = np.random.default_rng(0)
TRUTH = RNG.uniform(0.8, 6.0, size=(120, 160)).astype(np.float32)


def test_a_mis_scaled_model_is_fixed_by_one_percent_of_pixels() -> None:
    wrong = TRUTH * 1.7 * RNG.normal(1.0, 0.03, TRUTH.shape).astype(np.float32)
    anchors = sparse_subset(TRUTH, 0.01, np.random.default_rng(1))
    assert 100 < np.isfinite(anchors).sum() < 300
    fit = fit_anchor(wrong, anchors, "scale")
    assert fit.stable and fit.scale == pytest.approx(1 / 1.7, rel=0.01)
    before = compute_depth_metrics(wrong, TRUTH)["abs_rel"]
    after = compute_depth_metrics(apply_anchor(wrong, fit), TRUTH)["abs_rel"]
    assert before > 0.6 and after < 0.05


def test_scale_shift_ignores_outliers() -> None:
    wrong = (TRUTH - 0.4) / 1.3  # truth = 1.3·wrong + 0.4
    metric = TRUTH.copy()
    bad = RNG.random(TRUTH.shape) < 0.1
    metric[bad] = 0.3  # a tenth of the sensor's returns hit something else
    fit = fit_anchor(wrong, metric, "scale_shift")
    assert fit.stable
    assert fit.scale == pytest.approx(1.3, abs=1e-3) and fit.shift == pytest.approx(0.4, abs=1e-3)
    assert fit.points == pytest.approx((~bad).sum(), rel=0.01)


def test_unusable_anchors_give_an_unstable_fit_with_the_reason() -> None:
    few = np.full_like(TRUTH, np.nan)
    few[0, :5] = 2.0
    fit = fit_anchor(TRUTH, few)
    assert (fit.outcome, fit.reason) == ("too_few_points", "5 anchor points (need 20)")
    fit = fit_anchor(TRUTH, TRUTH[::2, ::2])
    assert fit.outcome == "wrong_size" and "metric depth is 80x60" in fit.reason
    noise = RNG.uniform(0.5, 9.0, TRUTH.shape).astype(np.float32)
    fit = fit_anchor(TRUTH, noise)  # unrelated depths: residual too large
    assert (fit.stable, fit.outcome) == (False, "unstable") and fit.reason.startswith("residual")
    fit = fit_anchor(TRUTH, 10.0 - TRUTH, "scale_shift")  # depth ordered back to front
    assert fit.outcome == "unstable" and fit.reason == "scale -1 is not > 0"
    with pytest.raises(ValueError, match="anchor mode"):
        fit_anchor(TRUTH, TRUTH, "magic")


def test_tracker_smooths_stable_fits_and_keeps_them_through_bad_frames() -> None:
    tracker = AnchorTracker("scale", smoothing=0.75)
    tracker.update(TRUTH, TRUTH * 2.0)
    assert tracker.current.scale == pytest.approx(2.0)
    tracker.update(TRUTH, TRUTH * 4.0)
    assert tracker.current.scale == pytest.approx(0.75 * 2.0 + 0.25 * 4.0)
    fit = tracker.update(TRUTH, np.full_like(TRUTH, np.nan))
    assert (fit.stable, fit.outcome, tracker.last) == (False, "too_few_points", fit)
    assert tracker.current.scale == pytest.approx(2.5)


def test_holes_fill_passes_metric_depth_through() -> None:
    metric = np.full((2, 2), np.nan, dtype=np.float32)
    metric[0, 0] = 5.0
    depth = np.ones((2, 2), dtype=np.float32)
    fit = fit_anchor(np.ones((30, 30)), np.full((30, 30), 2.0))
    out = apply_anchor(depth, fit, metric, "holes")
    np.testing.assert_array_equal(out, [[5.0, 2.0], [2.0, 2.0]])
    np.testing.assert_array_equal(apply_anchor(depth, None), depth)


def test_points_project_to_their_pixels_and_the_nearest_wins() -> None:
    k = CameraIntrinsics(fx=100.0, fy=100.0, cx=80.0, cy=60.0, width=160, height=120)
    points = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [1.0, -0.5, 2.0], [0.0, 0.0, -1.0]])
    depth = points_to_depth(points, k, 160, 120)
    assert depth[60, 80] == 2.0  # nearer of the two on the optical axis
    assert depth[60 - 25, 80 + 50] == 2.0  # u = 100·1/2 + 80, v = 100·(-0.5)/2 + 60
    assert np.isfinite(depth).sum() == 2
    # A dense cloud of a depth map projects back onto that depth map.
    cloud = depth_to_points(TRUTH, k).reshape(-1, 3)
    np.testing.assert_allclose(points_to_depth(cloud, k, 160, 120), TRUTH, rtol=1e-5)
