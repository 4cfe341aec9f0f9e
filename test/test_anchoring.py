"""Metric anchoring: robust fits on sparse anchors, smoothing, hole filling, projection."""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from moa_depth_ros.anchoring import (
    RESEED_AFTER,
    AnchorSettings,
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


# ---------------------------------------------------------------- finite is not sane (bounds)

NODE_RANGE = AnchorSettings(mode="scale", smoothing=0.5, min_depth=0.1, max_depth=20.0)


@contextlib.contextmanager
def _no_runtime_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's overflow / invalid warnings
        yield


def test_a_fit_that_is_finite_in_float64_but_not_in_float32_is_out_of_bounds() -> None:
    # metric = 5e38·pred - 9.3e38: representable anchors (<= 3.4e38), a float64-finite fit
    # whose float32 scale is inf; applied, inf·d + (-inf) made every pixel NaN.
    pred = np.linspace(1.86, 2.54, 400, dtype=np.float32).reshape(20, 20)
    metric = (5e38 * pred.astype(np.float64) - 9.3e38).astype(np.float32)
    wide = AnchorSettings(mode="scale_shift", max_depth=1e39)  # anchors in range on purpose
    with _no_runtime_warnings():
        fit = fit_anchor(pred, metric, wide)
    assert fit.outcome == "out_of_bounds" and "not finite in float32" in fit.reason
    # In the published range (the node's) those anchors are not even data.
    fit = fit_anchor(pred, metric, replace(wide, max_depth=20.0))
    assert (fit.outcome, fit.points) == ("too_few_points", 0)


def test_scale_and_shift_bounds_name_the_bound() -> None:
    pred = np.linspace(0.15, 0.5, 400, dtype=np.float32).reshape(20, 20)
    fit = fit_anchor(pred, pred * 20, NODE_RANGE)  # a metric model 20x off is a broken sensor
    assert fit.outcome == "out_of_bounds" and fit.scale == pytest.approx(20.0)
    assert fit.reason == "scale 20 is outside [0.1, 10] (max scale factor)"
    assert fit_anchor(pred, pred * 20, replace(NODE_RANGE, max_scale_factor=25.0)).stable
    far = np.linspace(15.0, 20.0, 400, dtype=np.float32).reshape(20, 20)
    fit = fit_anchor(far, 2 * far - 25, replace(NODE_RANGE, mode="scale_shift"))
    assert (fit.scale, fit.shift) == pytest.approx((2.0, -25.0), abs=1e-4)
    assert fit.outcome == "out_of_bounds"
    assert fit.reason == "shift -25 m is outside +-20 m (the depth range)"
    fit = fit_anchor(pred, pred * 1.5, NODE_RANGE)
    assert fit.stable and np.float32(fit.scale) == fit.scale  # the value applied, exactly


def test_one_frame_of_huge_anchors_changes_nothing_and_warns_nothing() -> None:
    """Good anchors, then a frame of 1e30 anchors, then one crafted to float32's limit, then a
    sensor reading 3x too far: every frame keeps the good fit, none is NaN, each is counted."""
    tracker = AnchorTracker(NODE_RANGE)
    wrong = TRUTH * np.float32(1.7)
    anchors = sparse_subset(TRUTH, 0.01, np.random.default_rng(1))
    good = tracker.anchor(wrong, anchors)
    assert good.outcome == "anchored" and np.isfinite(good.depth).all()
    huge = anchors * np.float32(6.7e29)  # a perfect fit, but 6.7e29 times too far
    limit = anchors * np.float32(5e37)  # up to 3e38: float32's limit
    outcomes = []
    with _no_runtime_warnings():
        for metric in (huge, limit, anchors * 3):
            frame = tracker.anchor(wrong, metric)
            outcomes.append(frame.outcome)
            np.testing.assert_array_equal(frame.depth, good.depth)  # the good fit, untouched
    assert outcomes == ["too_few_points", "too_few_points", "out_of_bounds"]
    assert "is 3x the smoothed 0.588 (max scale change 2)" in tracker.last.reason
    assert tracker.current.scale == pytest.approx(1 / 1.7, rel=0.01)


def test_a_lasting_change_of_scale_is_adopted_after_agreeing_frames() -> None:
    tracker = AnchorTracker(replace(NODE_RANGE, smoothing=0.0))
    assert tracker.anchor(TRUTH, TRUTH).outcome == "anchored"  # scale 1
    for _ in range(RESEED_AFTER - 1):  # a new room: the scale is now 3
        assert tracker.anchor(TRUTH, TRUTH * 3).outcome == "out_of_bounds"
    assert tracker.current.scale == 1.0
    frame = tracker.anchor(TRUTH, TRUTH * 3)
    assert frame.outcome == "anchored" and tracker.current.scale == pytest.approx(3.0)


def test_fits_that_disagree_with_each_other_never_reseed() -> None:
    tracker = AnchorTracker(replace(NODE_RANGE, smoothing=0.0))
    tracker.anchor(TRUTH, TRUTH)
    for i in range(3 * RESEED_AFTER):  # alternating 0.3x and 3x: a glitching sensor
        metric = np.clip(TRUTH * (0.3 if i % 2 else 3.0), 0.1, 20)
        assert tracker.anchor(TRUTH, metric).outcome == "out_of_bounds", i
    assert tracker.current.scale == 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("smoothing", math.nan, "anchor smoothing must be in [0, 0.99]"),
        ("smoothing", 0.995, "anchor smoothing must be in [0, 0.99]"),
        ("min_points", 1, "anchor min points must be in [2, 1e+07]"),
        ("min_points", 10**9, "anchor min points must be in [2, 1e+07]"),
        ("min_points", 2.5, "anchor min points must be an integer"),
        ("max_residual", -1.0, "anchor max residual must be in [0.001, 10]"),
        ("max_residual", math.nan, "anchor max residual must be in [0.001, 10]"),
        ("max_residual", 1e30, "anchor max residual must be in [0.001, 10]"),
        ("max_scale_factor", 0.5, "anchor max scale factor must be in [1, 1000]"),
        ("max_scale_change", math.inf, "anchor max scale change must be in [1, 1000]"),
        ("max_depth", math.inf, "anchor depth range: need 0 < min_depth < max_depth"),
        ("space", "inverse", "anchor space must be one of ('depth', 'inverse_depth')"),
        ("mode", "none", "anchor mode none with anchor fill none would use no anchor"),
    ],
)
def test_settings_name_the_bad_value(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        AnchorSettings(**{field: value})


def test_the_node_accepts_exactly_the_ranges_the_core_accepts() -> None:
    """One table: the node's parameter descriptors carry the core's ranges."""
    from moa_depth_ros.anchoring import SETTING_RANGES
    from moa_depth_ros.node.params import PARAMETERS_BY_NAME

    for name, (low, high) in SETTING_RANGES.items():
        spec = PARAMETERS_BY_NAME[f"anchor_{name}"]
        assert tuple(spec.float_range or spec.int_range) == (low, high), name
        AnchorSettings(**{name: type(spec.default)(low)})  # both ends are accepted
        AnchorSettings(**{name: type(spec.default)(high)})
    settings = AnchorSettings.from_prefixed(
        {"anchor_mode": "scale_shift", "anchor_fill": "holes", "anchor_smoothing": 0.25,
         "anchor_min_points": 7, "anchor_max_residual": 0.5, "anchor_max_scale_factor": 3.0,
         "anchor_max_scale_change": 1.5, "anchor_unrelated": 1},
        max_depth=20.0,
    )  # fmt: skip
    assert (settings.mode, settings.fill, settings.min_points, settings.max_depth) == (
        "scale_shift", "holes", 7, 20.0)  # fmt: skip


def test_mode_none_only_fills_and_says_so() -> None:
    tracker = AnchorTracker(AnchorSettings(mode="none", fill="holes", max_depth=20.0))
    metric = np.full_like(TRUTH, np.nan)
    metric[0, 0] = 3.0
    frame = tracker.anchor(TRUTH, metric)
    assert (frame.outcome, frame.fit, tracker.current) == ("filled", None, None)
    assert frame.depth[0, 0] == 3.0
    np.testing.assert_array_equal(frame.depth.ravel()[1:], TRUTH.ravel()[1:])
    empty = tracker.anchor(TRUTH, np.full_like(TRUTH, 50.0))  # beyond the range: no data
    assert empty.outcome == "too_few_points"
    with pytest.raises(ValueError, match="mode none fits nothing"):
        fit_anchor(TRUTH, TRUTH, AnchorSettings(mode="none", fill="holes"))


# ----------------------------------------------------------------- relative models (inverse)


def _relative(truth: np.ndarray, scale: float = 37.0, shift: float = 4.0) -> np.ndarray:
    """What a relative model gives: affine-invariant inverse depth (unknown scale and shift)."""
    return (scale / truth + shift).astype(np.float32)


def test_a_relative_model_becomes_metric_by_a_fit_in_inverse_depth() -> None:
    relative = _relative(TRUTH)
    anchors = sparse_subset(TRUTH, 0.01, np.random.default_rng(2))
    settings = AnchorSettings("scale_shift", space="inverse_depth", max_depth=10.0)
    tracker = AnchorTracker(settings)
    # Before any anchor the values are not metres: nothing to publish.
    assert tracker.anchor(relative, None).depth is None
    frame = tracker.anchor(relative, anchors)
    assert frame.outcome == "anchored"
    # 1/truth = (relative - 4) / 37: scale 1/37, shift -4/37.
    assert frame.fit.scale == pytest.approx(1 / 37, rel=1e-4)
    assert frame.fit.shift == pytest.approx(-4 / 37, rel=1e-3)
    assert np.abs(frame.depth - TRUTH).max() / TRUTH.min() < 1e-3
    # A later frame without anchors keeps the fit and stays metric.
    later = tracker.anchor(relative, None)
    assert later.outcome == "missing" and np.allclose(later.depth, frame.depth)
    # Fitting in depth space instead is wrong for this model, by a lot.
    depth_space = fit_anchor(relative, anchors, AnchorSettings("scale_shift", max_depth=10.0))
    wrong = apply_anchor(relative, depth_space)
    assert compute_depth_metrics(wrong, TRUTH)["abs_rel"] > 0.1


def test_inverse_depth_fits_publish_nan_where_the_fit_is_not_positive() -> None:
    fit_settings = AnchorSettings("scale", space="inverse_depth", max_depth=10.0)
    relative = _relative(TRUTH, shift=0.0)
    fit = fit_anchor(relative, TRUTH, fit_settings)
    assert fit.stable and fit.scale == pytest.approx(1 / 37, rel=1e-5)
    negative = relative.copy()
    negative[0, :5] = -1.0  # a model value that maps to a negative inverse depth
    out = apply_anchor(negative, fit, depth_range=(0.1, 10.0), space="inverse_depth")
    assert np.isnan(out[0, :5]).all() and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="needs a fit"):
        apply_anchor(relative, None, space="inverse_depth")


def test_inverse_depth_bounds_ignore_the_scale_factor_but_bound_the_shift() -> None:
    """A relative model's scale is arbitrary (1/37 here, far outside max_scale_factor 10); a
    shift beyond 1/min_depth is still rejected."""
    settings = AnchorSettings("scale_shift", space="inverse_depth", max_depth=10.0, min_depth=0.5)
    assert fit_anchor(_relative(TRUTH, scale=500.0), TRUTH, settings).stable
    far_shift = fit_anchor(_relative(TRUTH, shift=200.0), TRUTH, settings)
    # 1/truth = (relative - 200) / 37: the shift -200/37 = -5.4, beyond 1/0.5.
    assert far_shift.outcome == "out_of_bounds" and "one over the minimum depth" in far_shift.reason


def test_a_depth_prompt_keeps_only_anchors() -> None:
    """One rule for every prompt (node, bag eval, distillation): anchors as metres, the rest
    NaN; a frame without an anchor has no prompt."""
    from moa_depth_ros.anchoring import depth_prompt

    metric = np.array([[2.0, 0.0, np.nan], [1e30, 5.0, 0.05]], np.float32)
    prompt, points = depth_prompt(metric, (0.1, 10.0))
    assert points == 2 and prompt.dtype == np.float32
    np.testing.assert_array_equal(prompt, [[2.0, np.nan, np.nan], [np.nan, 5.0, np.nan]])
    assert depth_prompt(np.zeros((2, 3), np.float32), (0.1, 10.0)) == (None, 0)
