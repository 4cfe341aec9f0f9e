"""NYU Depth V2 evaluation metrics (BTS/AdaBins protocol), numpy only.

Per image: clamp the prediction to [min_depth, max_depth], keep pixels with
min_depth < gt < max_depth (inside an optional crop and mask), compute the metrics;
the dataset figure is the mean of the per-image values (see `MetricAverager`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Order used in tables and reports: errors (lower is better), then accuracies (higher is better).
METRIC_NAMES: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "delta1",
    "delta2",
    "delta3",
)
HIGHER_IS_BETTER = frozenset({"delta1", "delta2", "delta3"})
#: Per-frame values averaged beside the metrics when every frame has them (not in tables).
EXTRA_AVERAGED = ("pred_usable",)

# (top, bottom, left, right) slice bounds for 480×640 NYU ground truth.
EIGEN_CROP = (45, 471, 41, 601)  # BTS / AdaBins
DEPTHCLIP_CROP = (45, 471, 46, 601)  # DepthCLIP / DepthBLIP-2 eval code
#: "scale_shift_inverse" aligns in inverse depth: the prediction holds inverse depth (a relative
#: model's output, e.g. Depth Anything relative or MiDaS, or 1/metres), s·pred + t is fitted to
#: 1/gt, and the aligned depth is 1/(s·pred + t). The others align depth (metres).
ALIGN_MODES = ("none", "median", "scale_shift", "scale_shift_inverse")
#: The alignment that fits a relative model's affine-invariant inverse depth.
INVERSE_ALIGN = "scale_shift_inverse"
#: Alignments of depth itself: meaningless for relative inverse depth.
DEPTH_ALIGN_MODES = ("median", "scale_shift")


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    # Accept 1×H×W / H×W×1 maps as produced by models and datasets.
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an H×W depth map, got shape {array.shape}")
    return array


def valid_mask(
    gt: np.ndarray,
    pred: np.ndarray | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: tuple[int, int, int, int] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean H×W mask of the pixels that count: gt in (min_depth, max_depth), finite pred,
    inside `crop` = (top, bottom, left, right) and inside the optional extra `mask`."""
    gt = _as_2d("gt", gt)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if pred is not None:
        pred = _as_2d("pred", pred)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
        valid &= np.isfinite(pred)
    if crop is not None:
        top, bottom, left, right = crop
        height, width = gt.shape
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"crop {crop} does not fit a {height}×{width} depth map")
        in_crop = np.zeros_like(valid)
        in_crop[top:bottom, left:right] = True
        valid &= in_crop
    if mask is not None:
        mask = np.squeeze(np.asarray(mask, dtype=bool))
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} != gt shape {gt.shape}")
        valid &= mask
    return valid


def compute_depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: tuple[int, int, int, int] | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float] | None:
    """Metrics of one image (names in `METRIC_NAMES`, plus `valid_pixels`).

    Returns None when no pixel is valid; the caller decides how to count that image.
    """
    pred = _as_2d("pred", pred)
    gt = _as_2d("gt", gt)
    valid = valid_mask(gt, pred, min_depth, max_depth, crop, mask)
    count = int(valid.sum())
    if count == 0:
        return None
    # BTS clamps the prediction so log metrics stay finite and far outliers are bounded.
    d = np.clip(pred[valid], min_depth, max_depth)
    g = gt[valid]

    ratio = np.maximum(d / g, g / d)
    diff = d - g
    log_diff = np.log(d) - np.log(g)
    # Clamp at 0: mean(e²) − mean(e)² can go slightly negative by rounding when e is constant.
    silog_var = max(float(np.mean(log_diff**2) - np.mean(log_diff) ** 2), 0.0)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "log10": float(np.mean(np.abs(np.log10(d) - np.log10(g)))),
        "silog": 100.0 * float(np.sqrt(silog_var)),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "valid_pixels": count,
    }


def align_prediction(
    pred: np.ndarray,
    gt: np.ndarray,
    mode: str = "none",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Align a prediction to the ground truth on `valid` pixels (default: gt > 0, both finite).

    "none" returns pred unchanged; "median" scales by median(gt)/median(pred) (the
    DepthCLIP-family relative protocol); "scale_shift" fits s·pred + t by least squares;
    "scale_shift_inverse" takes `pred` as inverse depth, fits s·pred + t to 1/gt by least squares
    and returns the depth 1/(s·pred + t), NaN where that is not positive (or `pred` not finite),
    and all NaN when no pixel is valid (inverse values are never depths).
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; expected one of {ALIGN_MODES}")
    pred = np.asarray(pred)
    if mode == "none":
        return pred
    p2 = _as_2d("pred", pred)
    g2 = _as_2d("gt", gt)
    if valid is None:
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(g2) & np.isfinite(p2) & (g2 > 0)
    else:
        valid = np.squeeze(np.asarray(valid, dtype=bool)) & np.isfinite(p2)
    if mode == INVERSE_ALIGN:
        dtype = pred.dtype if np.issubdtype(pred.dtype, np.floating) else np.float32
        return _align_inverse(p2, g2, valid).reshape(pred.shape).astype(dtype, copy=False)
    if not valid.any():
        return pred
    p = p2[valid]
    g = g2[valid]
    if mode == "median":
        median_pred = float(np.median(p))
        if median_pred <= 0:
            return pred
        scale, shift = float(np.median(g)) / median_pred, 0.0
    else:
        design = np.stack([p, np.ones_like(p)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, g, rcond=None)
    return (pred * scale + shift).astype(pred.dtype, copy=False)


def _align_inverse(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1/(s·pred + t) with s, t fitted to 1/gt on `valid` (float64 throughout)."""
    with np.errstate(all="ignore"):
        target = 1.0 / gt
        valid = valid & (gt > 0) & np.isfinite(target)  # a subnormal gt has no finite inverse
    if not valid.any():
        return np.full(pred.shape, np.nan)
    p = pred[valid]
    design = np.stack([p, np.ones_like(p)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, target[valid], rcond=None)
    with np.errstate(all="ignore"):
        inverse = scale * pred + shift
        return np.where(np.isfinite(inverse) & (inverse > 0), 1.0 / inverse, np.nan)


class MetricAverager:
    """Accumulates per-image metric dicts; `compute()` gives the per-image mean of each metric.

    `update(None)` (an image without valid pixels) is counted in `skipped`, not in the mean.
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self.count = 0
        self.skipped = 0

    def update(self, metrics: Mapping[str, float] | None) -> None:
        if metrics is None:
            self.skipped += 1
            return
        for name in METRIC_NAMES:  # every one is required
            self._sums[name] = self._sums.get(name, 0.0) + float(metrics[name])
        for name in EXTRA_AVERAGED:
            if name in metrics:
                self._sums[name] = self._sums.get(name, 0.0) + float(metrics[name])
        self.count += 1

    def compute(self) -> dict[str, float]:
        """Mean per metric (NaN when nothing was added) plus `count` and `skipped`."""
        result: dict[str, float] = {
            name: (self._sums[name] / self.count if self.count else float("nan"))
            for name in METRIC_NAMES
        }
        for name in EXTRA_AVERAGED:
            if name in self._sums:
                result[name] = self._sums[name] / self.count
        result["count"] = self.count
        result["skipped"] = self.skipped
        return result


def format_markdown_table(
    metrics_by_row: Mapping[str, Mapping[str, float]], digits: int = 3
) -> str:
    """Markdown table, one row per entry (e.g. method name), columns in `METRIC_NAMES` order.

    Arrows mark the better direction; a metric missing from a row prints as "–", and a
    `count` column is added when any row has one.
    """
    with_count = any("count" in row for row in metrics_by_row.values())
    headers = ["", *(f"{n} {'↑' if n in HIGHER_IS_BETTER else '↓'}" for n in METRIC_NAMES)]
    if with_count:
        headers.append("images")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for label, row in metrics_by_row.items():
        cells = [str(label)]
        for name in METRIC_NAMES:
            value = row.get(name)
            cells.append("–" if value is None else f"{float(value):.{digits}f}")
        if with_count:
            cells.append(str(int(row["count"])) if "count" in row else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
