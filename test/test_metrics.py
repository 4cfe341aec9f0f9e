"""Depth metrics against hand-computed values, masking, crops and alignment."""

import math

import numpy as np
import pytest

from moa_depth_ros.evaluation.metrics import (
    DEPTHCLIP_CROP,
    EIGEN_CROP,
    METRIC_NAMES,
    MetricAverager,
    align_prediction,
    compute_depth_metrics,
    format_markdown_table,
    valid_mask,
)


def _gt(shape=(480, 640), seed=0):
    return np.random.default_rng(seed).uniform(0.5, 9.0, size=shape).astype(np.float32)


def test_scaled_prediction_gives_known_errors():
    gt = _gt((20, 30))
    m = compute_depth_metrics(1.1 * gt, gt)
    assert m["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert m["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-5)
    assert m["log10"] == pytest.approx(math.log10(1.1), rel=1e-5)
    # A global scale is invisible to the scale-invariant log error.
    assert m["silog"] == pytest.approx(0.0, abs=1e-3)
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0
    assert m["valid_pixels"] == 600
    assert set(METRIC_NAMES) <= set(m)


def test_two_by_two_by_hand():
    gt = np.array([[1.0, 1.0], [10.0, 10.0]])
    pred = np.array([[1.0, 10.0], [10.0, 1.0]])
    m = compute_depth_metrics(pred, gt, max_depth=100.0)
    # d − g = [0, 9, 0, −9]
    assert m["abs_rel"] == pytest.approx((0 + 9 / 1 + 0 + 9 / 10) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 81 / 1 + 0 + 81 / 10) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(162 / 4))
    # ln d − ln g = [0, ln10, 0, −ln10]: mean 0, mean square ln²10 / 2.
    assert m["rmse_log"] == pytest.approx(math.log(10) / math.sqrt(2))
    assert m["silog"] == pytest.approx(100 * math.log(10) / math.sqrt(2))
    assert m["log10"] == pytest.approx(0.5)
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.5, 0.5, 0.5)


def test_silog_removes_mean_log_error_only():
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    pred = gt * np.array([[2.0, 2.0], [2.0, 8.0]])
    e = np.log([2.0, 2.0, 2.0, 8.0])
    expected = 100 * math.sqrt(np.mean(e**2) - np.mean(e) ** 2)
    assert compute_depth_metrics(pred, gt, max_depth=100.0)["silog"] == pytest.approx(expected)


def test_prediction_is_clamped_before_metrics():
    gt = np.full((2, 2), 5.0)
    assert compute_depth_metrics(np.full((2, 2), 50.0), gt)["abs_rel"] == pytest.approx(1.0)
    low = compute_depth_metrics(np.array([[-1.0, 0.0], [5.0, 5.0]]), gt)
    assert np.isfinite(low["rmse_log"])
    assert low["abs_rel"] == pytest.approx(2 * (5 - 1e-3) / 5 / 4)


def test_invalid_pixels_are_ignored():
    gt = np.array([[0.0, 2.0, 12.0], [np.nan, 10.0, 3.0]])
    pred = np.array([[7.0, 2.0, 7.0], [7.0, 7.0, np.nan]])
    m = compute_depth_metrics(pred, gt)
    # Only (0, 1) counts: gt 0, nan, ≥ max_depth and a nan prediction are all excluded.
    assert m["valid_pixels"] == 1
    assert m["abs_rel"] == 0.0


def test_crop_excludes_outside_pixels():
    gt = _gt()
    pred = gt.copy()
    pred[:45] = 100.0  # outside the Eigen crop: must not matter
    pred[:, 601:] = 0.1
    m = compute_depth_metrics(pred, gt, crop=EIGEN_CROP)
    assert m["abs_rel"] == 0.0
    assert m["valid_pixels"] == (471 - 45) * (601 - 41)
    assert compute_depth_metrics(gt, gt, crop=DEPTHCLIP_CROP)["valid_pixels"] == 426 * 555
    assert compute_depth_metrics(pred, gt)["abs_rel"] > 0


def test_crop_that_does_not_fit_raises():
    with pytest.raises(ValueError, match="crop"):
        compute_depth_metrics(np.ones((10, 10)), np.ones((10, 10)), crop=EIGEN_CROP)


def test_extra_mask_and_channel_dims():
    gt = _gt((1, 4, 5))  # 1×H×W as from a dataset sample
    pred = gt * 2
    mask = np.zeros((4, 5), dtype=bool)
    mask[0, 0] = True
    m = compute_depth_metrics(pred, gt, mask=mask)
    assert m["valid_pixels"] == 1
    assert valid_mask(gt, mask=mask).sum() == 1


def test_no_valid_pixels_returns_none_and_averager_counts_it():
    assert compute_depth_metrics(np.ones((3, 3)), np.zeros((3, 3))) is None
    averager = MetricAverager()
    gt = _gt((4, 4)) / 2  # keep 1.3·gt below max_depth, where clamping would kick in
    averager.update(compute_depth_metrics(1.1 * gt, gt))
    averager.update(compute_depth_metrics(1.3 * gt, gt))
    averager.update(None)
    result = averager.compute()
    assert result["abs_rel"] == pytest.approx(0.2, rel=1e-5)
    assert result["count"] == 2 and result["skipped"] == 1
    assert math.isnan(MetricAverager().compute()["rmse"])


def test_median_alignment_undoes_global_scale():
    gt = _gt((30, 40))
    pred = 0.37 * gt
    aligned = align_prediction(pred, gt, "median")
    np.testing.assert_allclose(aligned, gt, rtol=1e-5)
    assert aligned.dtype == pred.dtype
    assert compute_depth_metrics(aligned, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-5)


def test_scale_shift_alignment_undoes_scale_and_shift():
    gt = _gt((30, 40))
    pred = (gt - 0.4) / 2.5
    valid = gt > 1.0
    aligned = align_prediction(pred, gt, "scale_shift", valid)
    np.testing.assert_allclose(aligned, gt, rtol=1e-4)


def test_inverse_alignment_recovers_depth_from_affine_inverse_depth():
    """A relative model's output is inverse depth up to scale and shift: 37/depth + 4 is
    aligned back to depth exactly (s = 1/37, t = -4/37)."""
    gt = _gt((30, 40))
    pred = (37.0 / gt + 4.0).astype(np.float32)
    pred[0, 0] = -100.0  # s·pred + t < 0: beyond infinity, no depth
    pred[0, 1] = np.nan
    valid = np.ones(gt.shape, bool)
    valid[0, :2] = False  # the two broken pixels take no part in the fit
    aligned = align_prediction(pred, gt, "scale_shift_inverse", valid)
    assert aligned.dtype == np.float32 and aligned.shape == gt.shape
    assert np.isnan(aligned[0, :2]).all()
    np.testing.assert_allclose(aligned[valid], gt[valid], rtol=1e-5)
    assert compute_depth_metrics(aligned, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    # By default the fit uses every pixel with finite values: the two outliers then cost.
    unmasked = align_prediction(np.where(np.isnan(pred), 5.0, pred), gt, "scale_shift_inverse")
    assert not np.allclose(unmasked[valid], gt[valid], rtol=1e-3)


def test_inverse_alignment_without_valid_pixels_is_nan_never_inverse_values():
    gt = _gt((4, 4))
    pred = 37.0 / gt + 4.0
    aligned = align_prediction(pred, gt, "scale_shift_inverse", np.zeros(gt.shape, bool))
    assert np.isnan(aligned).all()
    # Integer inverse depth (a disparity image) comes back as float depth.
    disparity = np.array([[10, 20], [40, 80]], np.uint16)
    depth = align_prediction(disparity, 8.0 / disparity, "scale_shift_inverse")
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, 8.0 / disparity, rtol=1e-6)


def test_alignment_none_and_bad_mode():
    gt = _gt((3, 3))
    assert align_prediction(gt * 3, gt, "none") == pytest.approx(gt * 3)
    with pytest.raises(ValueError, match="median"):
        align_prediction(gt, gt, "affine")


def test_markdown_table():
    gt = _gt((4, 4))
    rows = {"ours": {**compute_depth_metrics(1.1 * gt, gt), "count": 654}, "other": {"rmse": 1.5}}
    table = format_markdown_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| ") and "abs_rel ↓" in lines[0] and "delta1 ↑" in lines[0]
    assert "| ours | 0.100 |" in lines[2] and lines[2].endswith("| 654 |")
    assert "1.500" in lines[3] and "–" in lines[3]
