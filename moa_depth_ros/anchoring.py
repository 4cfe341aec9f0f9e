"""Metric anchoring: fit a model's depth to sparse metric depth (an RGB-D camera with holes, a
projected LiDAR), smooth the fit over time, and apply it.

numpy only, so the node, bag evaluation and tests share one implementation.

- ``scale``: depth' = s·depth with s the median of metric/predicted over the anchor pixels
  (robust to a minority of outliers without any threshold).
- ``scale_shift``: depth' = s·depth + t by least squares, refitted after dropping anchors whose
  residual exceeds ``OUTLIER_MADS`` median absolute deviations (MiDaS-style alignment made
  robust to sensor outliers).

A fit is ``stable`` when it has at least ``min_points`` anchors, a positive scale and a relative
residual below ``max_residual``; unstable fits are reported and not applied (the last stable fit
is kept), so a glitching sensor cannot wreck the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moa_depth_ros.geometry import CameraIntrinsics

__all__ = [
    "ANCHOR_FILLS",
    "ANCHOR_MODES",
    "DEFAULT_MAX_RESIDUAL",
    "DEFAULT_MIN_POINTS",
    "DEFAULT_SMOOTHING",
    "FIT_OUTCOMES",
    "AnchorFit",
    "AnchorTracker",
    "apply_anchor",
    "check_anchor_settings",
    "fit_anchor",
    "points_to_depth",
    "sparse_subset",
]

#: "none", not "off": YAML 1.1 (ROS parameter files, `-p x:=off`) reads a bare off as false.
ANCHOR_MODES = ("none", "scale", "scale_shift")
#: ``holes``: where the metric input has valid depth, publish it; the model fills the rest.
ANCHOR_FILLS = ("none", "holes")
OUTLIER_MADS = 3.0
#: Weight of the previous fit in the temporal smoothing, shared by the node and bag evaluation
#: so a bag measures what the node would publish: half the old fit damps a glitching frame and
#: still follows a real change of scale within a few frames.
DEFAULT_SMOOTHING = 0.5
#: Fewest anchors for a stable fit, and the largest median relative residual of a stable fit.
DEFAULT_MIN_POINTS = 20
DEFAULT_MAX_RESIDUAL = 0.25
#: What a frame's fit came to, named alike in the node's /diagnostics and the bag report.
FIT_OUTCOMES = (
    "anchored",  # a stable fit
    "wrong_size",  # metric depth of another size than the prediction
    "too_few_points",  # fewer than min_points valid anchors (NaN, holes, out of view)
    "unstable",  # a residual above max_residual or a scale <= 0
)
#: Rounds of outlier rejection for scale_shift (one is usually enough; two catch clusters).
_REFITS = 2


@dataclass(frozen=True)
class AnchorFit:
    """One frame's fit: depth' = scale·depth + shift."""

    scale: float
    shift: float
    points: int  # anchors used (after outlier rejection)
    residual: float  # median |metric - depth'| / metric over the anchors used
    outcome: str  # one of FIT_OUTCOMES
    reason: str = ""  # why not stable

    @property
    def stable(self) -> bool:
        return self.outcome == "anchored"

    @staticmethod
    def identity() -> AnchorFit:
        return AnchorFit(1.0, 0.0, 0, math.nan, "too_few_points", "no anchors yet")


def _anchor_pixels(depth: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """(predicted, metric) at the pixels where both are valid, or why there are none."""
    depth = np.asarray(depth, dtype=np.float64)
    metric = np.asarray(metric, dtype=np.float64)
    if metric.shape != depth.shape:
        return f"metric depth is {metric.shape[1]}x{metric.shape[0]} but depth is " \
            f"{depth.shape[1]}x{depth.shape[0]}"  # fmt: skip
    valid = np.isfinite(depth) & np.isfinite(metric) & (depth > 0) & (metric > 0)
    return depth[valid], metric[valid]


def fit_anchor(
    depth: np.ndarray,
    metric: np.ndarray,
    mode: str = "scale",
    min_points: int = DEFAULT_MIN_POINTS,
    max_residual: float = DEFAULT_MAX_RESIDUAL,
) -> AnchorFit:
    """Fit ``depth`` (H×W metres, NaN invalid) to ``metric`` (same size, NaN or <= 0 where the
    sensor has nothing)."""
    if mode not in ANCHOR_MODES[1:]:
        raise ValueError(f"anchor mode must be one of {ANCHOR_MODES[1:]}, got {mode!r}")
    pixels = _anchor_pixels(depth, metric)
    if isinstance(pixels, str):
        return AnchorFit(1.0, 0.0, 0, math.nan, "wrong_size", pixels)
    pred, target = pixels
    if pred.size < max(min_points, 2):
        return AnchorFit(1.0, 0.0, int(pred.size), math.nan, "too_few_points",
                         f"{pred.size} anchor points (need {min_points})")  # fmt: skip
    if mode == "scale":
        scale, shift, used = float(np.median(target / pred)), 0.0, np.ones(pred.size, bool)
    else:
        used = np.ones(pred.size, dtype=bool)
        for _ in range(_REFITS + 1):
            design = np.stack([pred[used], np.ones(int(used.sum()))], axis=1)
            (scale, shift), *_ = np.linalg.lstsq(design, target[used], rcond=None)
            residuals = target - (scale * pred + shift)
            mad = float(np.median(np.abs(residuals[used] - np.median(residuals[used]))))
            keep = np.abs(residuals) <= OUTLIER_MADS * max(mad, 1e-6) * 1.4826
            if (keep == used).all() or keep.sum() < max(min_points, 2):
                break
            used = keep
        scale, shift = float(scale), float(shift)
    fitted = scale * pred[used] + shift
    residual = float(np.median(np.abs(target[used] - fitted) / target[used]))
    points = int(used.sum())
    if not scale > 0:
        reason = f"scale {scale:.3g} is not > 0"
        return AnchorFit(scale, shift, points, residual, "unstable", reason)
    if not residual <= max_residual:
        return AnchorFit(scale, shift, points, residual, "unstable",
                         f"residual {residual:.3f} > {max_residual}")  # fmt: skip
    return AnchorFit(scale, shift, points, residual, "anchored")


def check_anchor_settings(
    mode: str = "scale",
    smoothing: float = DEFAULT_SMOOTHING,
    fill: str = "none",
    fraction: float | None = None,
) -> None:
    """ValueError naming the first anchoring setting out of its range (one check for the
    tracker, the fill, the sparse subset and bag evaluation's settings)."""
    if mode not in ANCHOR_MODES:
        raise ValueError(f"anchor mode must be one of {ANCHOR_MODES}, got {mode!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"anchor smoothing must be in [0, 1), got {smoothing}")
    if fill not in ANCHOR_FILLS:
        raise ValueError(f"anchor fill must be one of {ANCHOR_FILLS}, got {fill!r}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"anchor fraction must be in (0, 1], got {fraction}")


class AnchorTracker:
    """Fits per frame, smoothed over time: ``smoothing`` is the weight of the previous fit
    (0 = use each frame's fit as is). Unstable fits leave the state alone."""

    def __init__(
        self,
        mode: str,
        smoothing: float = DEFAULT_SMOOTHING,
        min_points: int = DEFAULT_MIN_POINTS,
        max_residual: float = DEFAULT_MAX_RESIDUAL,
    ):
        check_anchor_settings(mode, smoothing)
        self.mode, self.smoothing = mode, smoothing
        self.min_points, self.max_residual = min_points, max_residual
        self.current: AnchorFit | None = None  # the smoothed fit being applied
        self.last = AnchorFit.identity()  # the latest frame's own fit

    def update(self, depth: np.ndarray, metric: np.ndarray) -> AnchorFit:
        """Fit this frame and fold it into the smoothed fit; returns the frame's own fit."""
        fit = fit_anchor(depth, metric, self.mode, self.min_points, self.max_residual)
        self.last = fit
        if not fit.stable:
            return fit
        if self.current is None:
            self.current = fit
        else:
            a = self.smoothing
            prev = self.current
            self.current = AnchorFit(
                a * prev.scale + (1 - a) * fit.scale,
                a * prev.shift + (1 - a) * fit.shift,
                fit.points,
                fit.residual,
                "anchored",
            )
        return fit


def apply_anchor(
    depth: np.ndarray,
    fit: AnchorFit | None,
    metric: np.ndarray | None = None,
    fill: str = "none",
) -> np.ndarray:
    """``depth`` rescaled by ``fit`` (unchanged without one); with ``fill='holes'`` the metric
    depth replaces it wherever the metric input is valid."""
    check_anchor_settings(fill=fill)
    out = np.asarray(depth, dtype=np.float32)
    if fit is not None:
        out = (out * np.float32(fit.scale) + np.float32(fit.shift)).astype(np.float32)
    if fill == "holes" and metric is not None and metric.shape == out.shape:
        valid = np.isfinite(metric) & (metric > 0)
        out = np.where(valid, metric, out).astype(np.float32)
    return out


def points_to_depth(
    points: np.ndarray, intrinsics: CameraIntrinsics, width: int, height: int
) -> np.ndarray:
    """Sparse H×W depth (NaN elsewhere) of N×3 optical-frame points (x right, y down, z
    forward) projected into a ``width``×``height`` image; the nearest point wins a pixel."""
    k = intrinsics.scaled(width, height)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > 0)]
    u = np.floor(k.fx * points[:, 0] / points[:, 2] + k.cx + 0.5).astype(np.int64)
    v = np.floor(k.fy * points[:, 1] / points[:, 2] + k.cy + 0.5).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], points[inside, 2]
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, v * width + u, z)
    depth[np.isinf(depth)] = np.nan
    return depth.reshape(height, width).astype(np.float32)


def sparse_subset(metric: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``metric`` with all but a random ``fraction`` of its valid pixels set to NaN: a dense
    depth camera standing in for a sparse sensor (bag evaluation)."""
    check_anchor_settings(fraction=fraction)
    metric = np.asarray(metric, dtype=np.float32)
    keep = np.isfinite(metric) & (metric > 0) & (rng.random(metric.shape) < fraction)
    return np.where(keep, metric, np.float32(np.nan)).astype(np.float32)
