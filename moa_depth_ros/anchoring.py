"""Metric anchoring: fit a model's depth to sparse metric depth (an RGB-D camera with holes, a
projected LiDAR), smooth the fit over time, bound it, and apply it.

:class:`AnchorTracker` is the one anchoring implementation: per frame it takes the model's
prediction, that frame's metric depth (or None) and the :class:`AnchorSettings`, and returns
the depth to publish (clipped to the published range, holes filled when asked), the frame's
outcome (one of :data:`ANCHOR_OUTCOMES`) and the frame's own fit. The node
(``node.anchors.CameraAnchoring``) and bag evaluation (``bags.evaluate``) both call it, so a
bag measures exactly what the node publishes. numpy only, no ROS.

- ``scale``: depth' = s·depth with s the median of metric/predicted over the anchor pixels
  (robust to a minority of outliers without any threshold).
- ``scale_shift``: depth' = s·depth + t by least squares, refitted after dropping anchors whose
  residual exceeds ``OUTLIER_MADS`` median absolute deviations (MiDaS-style alignment made
  robust to sensor outliers).
- ``none``: no fit; with ``fill: holes`` the metric depth only fills (bag evaluation).

Finite is not sane: an anchor outside the depth range is an invalid pixel, not data, and a fit
is used only when it has at least ``min_points`` anchors, a residual below ``max_residual``, a
scale within ``max_scale_factor`` of 1 **and** within ``max_scale_change`` of the smoothed fit
being applied, and a shift within the depth range, all checked on the float32 values that are
applied. Any other fit is counted with its reason and the last good fit is kept, so a glitching
(or hostile) sensor can neither wreck nor NaN the output.

Fitting space (``AnchorSettings.space``): ``depth`` for metric models (s·d + t fitted to
metres); ``inverse_depth`` for relative models, whose output is affine-invariant inverse depth
(Depth Anything relative, DPT): s·d + t is fitted to 1/metric and published as 1/(s·d + t)
(NaN where that is not positive). A relative prediction means nothing in metres until the
first good fit, so until then a frame has no depth to publish (``AnchoredFrame.depth`` is
None); the scale of a relative model is not "near 1", so ``max_scale_factor`` does not apply
there (the change against the smoothed fit does), and the shift is bounded by 1/min_depth.
A prompt-depth model takes the metric depth as an input instead and needs no fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.geometry import CameraIntrinsics

__all__ = [
    "ANCHOR_FILLS",
    "ANCHOR_MODES",
    "ANCHOR_OUTCOMES",
    "DEFAULT_MAX_RESIDUAL",
    "DEFAULT_MAX_SCALE_CHANGE",
    "DEFAULT_MAX_SCALE_FACTOR",
    "DEFAULT_MIN_POINTS",
    "DEFAULT_SMOOTHING",
    "FIT_OUTCOMES",
    "FIT_SPACES",
    "LIVE_OUTCOMES",
    "MAX_SCALE_LIMIT",
    "PREFIXED_SETTINGS",
    "SETTING_RANGES",
    "AnchorFit",
    "AnchorSettings",
    "AnchorTracker",
    "AnchoredFrame",
    "anchor_mask",
    "apply_anchor",
    "depth_prompt",
    "check_anchor_fraction",
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
#: A metric model is off by tens of percent in a new place, not by 10x: a fit further from 1
#: is a broken sensor or a broken message.
DEFAULT_MAX_SCALE_FACTOR = 10.0
#: Largest ratio between a frame's scale and the smoothed one (a real change of scale is
#: gradual; one frame that doubles it is a glitch). See ``RESEED_AFTER`` for a lasting change.
DEFAULT_MAX_SCALE_CHANGE = 2.0
#: Upper end of both factors' ranges (in SETTING_RANGES).
MAX_SCALE_LIMIT = 1000.0
#: Consecutive frames whose fits agree with each other but not with the smoothed fit after
#: which they replace it: the scale really changed (a new room), the smoothed fit is stale.
RESEED_AFTER = 10
#: The accepted range of each numeric anchoring setting, the one table the core checks and the
#: node's parameter descriptors, bag eval's options and distillation's config take theirs from,
#: so all three accept exactly the same values (a 1e30 residual bound would switch a check off).
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "smoothing": (0.0, 0.99),
    "min_points": (2, 10_000_000),
    "max_residual": (0.001, 10.0),
    "max_scale_factor": (1.0, MAX_SCALE_LIMIT),
    "max_scale_change": (1.0, MAX_SCALE_LIMIT),
}
#: The settings a caller maps from its own prefixed names (``anchor_<name>``).
PREFIXED_SETTINGS = ("mode", "fill", *SETTING_RANGES)
#: The default depth range of AnchorSettings (the node and bag eval give their own).
DEFAULT_DEPTH_RANGE = (1e-3, 1000.0)

#: What a frame's fit came to.
FIT_OUTCOMES = (
    "anchored",  # a stable fit, within bounds
    "wrong_size",  # metric depth of another size than the prediction
    "too_few_points",  # fewer than min_points valid anchors (NaN, holes, out of range or view)
    "unstable",  # a residual above max_residual or a scale <= 0
    "out_of_bounds",  # scale or shift outside the bounds, or not finite in float32
)
#: Outcomes only the live node meets (its anchors are messages with frames and clocks).
LIVE_OUTCOMES = (
    "wrong_frame",  # anchors in another frame_id than the image's
    "no_camera_info",  # metric_points cannot be projected without intrinsics
    "far_off",  # the sensor sends anchors, but their stamps are far from the image's
)
#: What happened to each frame's anchoring: named alike in the node's /diagnostics
#: (``anchor_frames_<outcome>``) and bag evaluation's report.
ANCHOR_OUTCOMES = FIT_OUTCOMES + (
    "prompted",  # a prompt-depth model took the metric depth as its input (no fit)
    "filled",  # mode none: no fit, the metric depth filled the holes
    "missing",  # no anchor for the frame
) + LIVE_OUTCOMES  # fmt: skip
#: Rounds of outlier rejection for scale_shift (one is usually enough; two catch clusters).
_REFITS = 2


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def _reciprocal(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, 1.0 / values, np.nan)


#: Where s·pred + t is fitted, by space: the map from metres to the values fitted to, which is
#: its own inverse (fitted values back to metres). depth: metric models; inverse_depth:
#: relative models (module doc).
_SPACES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "depth": _identity,
    "inverse_depth": _reciprocal,
}
FIT_SPACES = tuple(_SPACES)


@dataclass(frozen=True)
class AnchorSettings:
    """Every anchoring setting, checked on construction (ValueError naming the setting). The
    node's parameters and bag eval's options both map onto it."""

    mode: str = "scale"
    fill: str = "none"
    smoothing: float = DEFAULT_SMOOTHING
    min_points: int = DEFAULT_MIN_POINTS
    max_residual: float = DEFAULT_MAX_RESIDUAL
    max_scale_factor: float = DEFAULT_MAX_SCALE_FACTOR
    max_scale_change: float = DEFAULT_MAX_SCALE_CHANGE
    #: The published range: predictions are clipped to it, anchors outside it are invalid.
    min_depth: float = DEFAULT_DEPTH_RANGE[0]
    max_depth: float = DEFAULT_DEPTH_RANGE[1]
    space: str = "depth"

    def __post_init__(self) -> None:
        if self.mode not in ANCHOR_MODES:
            raise ValueError(f"anchor mode must be one of {ANCHOR_MODES}, got {self.mode!r}")
        if self.fill not in ANCHOR_FILLS:
            raise ValueError(f"anchor fill must be one of {ANCHOR_FILLS}, got {self.fill!r}")
        if self.mode == "none" and self.fill == "none":
            raise ValueError(
                "anchor mode none with anchor fill none would use no anchor: choose a mode "
                "(scale, scale_shift) or anchor fill holes"
            )
        if isinstance(self.min_points, bool) or not isinstance(self.min_points, (int, np.integer)):
            raise ValueError(f"anchor min points must be an integer, got {self.min_points!r}")
        for name, (low, high) in SETTING_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:  # NaN fails too
                raise ValueError(
                    f"anchor {name.replace('_', ' ')} must be in [{low:g}, {high:g}], got {value}"
                )
        check_depth_range(self.min_depth, self.max_depth, "anchor depth range")
        if self.space not in FIT_SPACES:
            raise ValueError(f"anchor space must be one of {FIT_SPACES}, got {self.space!r}")

    @property
    def depth_range(self) -> tuple[float, float]:
        return self.min_depth, self.max_depth

    @classmethod
    def from_prefixed(
        cls, values: Mapping[str, Any], prefix: str = "anchor_", **fixed: Any
    ) -> AnchorSettings:
        """The settings named ``<prefix><name>`` in ``values`` (the node's parameters, bag
        eval's options, distillation's config), plus ``fixed`` ones (the depth range, the
        space): one mapping for every caller.

        Raises:
            ValueError: a value (or combination) out of range, naming it.
        """
        return cls(**{name: values[prefix + name] for name in PREFIXED_SETTINGS}, **fixed)


def _as_settings(settings: AnchorSettings | str) -> AnchorSettings:
    return AnchorSettings(mode=settings) if isinstance(settings, str) else settings


def check_anchor_fraction(fraction: float | None) -> None:
    """ValueError unless ``fraction`` (bag eval's simulated sparse sensor) is None or in (0, 1]."""
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"anchor fraction must be in (0, 1], got {fraction}")


@dataclass(frozen=True)
class AnchorFit:
    """One frame's fit: depth' = scale·depth + shift (float32-exact values)."""

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


def anchor_mask(
    metric: np.ndarray, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE
) -> np.ndarray:
    """Where ``metric`` is an anchor: finite and inside ``depth_range``. A 1e30 (or a 0, a NaN,
    a reading beyond the published range) is an invalid pixel, not data."""
    metric = np.asarray(metric)
    with np.errstate(all="ignore"):  # a bound beyond float32 compares as inf, rightly
        return np.isfinite(metric) & (metric >= depth_range[0]) & (metric <= depth_range[1])


def depth_prompt(
    metric: np.ndarray, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE
) -> tuple[np.ndarray | None, int]:
    """A prompt model's input from a frame's metric depth: float32 metres, NaN wherever it is
    not an anchor (:func:`anchor_mask`), and the number of anchors; (None, 0) when it has none
    (the frame's outcome is then ``too_few_points``). The node, bag evaluation and distillation
    all build their prompts with it."""
    valid = anchor_mask(metric, depth_range)
    points = int(valid.sum())
    if not points:
        return None, 0
    return np.where(valid, metric, np.float32(np.nan)).astype(np.float32, copy=False), points


def _float32(value: float) -> float:
    """``value`` as the float32 it will be applied as (inf when it does not fit)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def fit_anchor(
    depth: np.ndarray, metric: np.ndarray, settings: AnchorSettings | str = "scale"
) -> AnchorFit:
    """Fit ``depth`` (H×W metres, NaN invalid) to ``metric`` (same size; pixels outside the
    depth range, NaN or <= 0 are not anchors). ``settings`` may be just a mode. The scale
    change against a smoothed fit is :class:`AnchorTracker`'s check."""
    settings = _as_settings(settings)
    if settings.mode == "none":
        raise ValueError("anchor mode none fits nothing (it only fills holes)")
    depth = np.asarray(depth)
    metric = np.asarray(metric)
    if metric.shape != depth.shape:
        reason = f"metric depth is {_size(metric)} but depth is {_size(depth)}"
        return AnchorFit(1.0, 0.0, 0, math.nan, "wrong_size", reason)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0) & anchor_mask(metric, settings.depth_range)
    to_space = _SPACES[settings.space]  # metres → fitted values, and back
    pred = depth[valid].astype(np.float64)
    metres = metric[valid].astype(np.float64)
    target = to_space(metres)
    minimum = max(settings.min_points, 2)
    if pred.size < minimum:
        return AnchorFit(1.0, 0.0, int(pred.size), math.nan, "too_few_points",
                         f"{pred.size} anchor points (need {settings.min_points})")  # fmt: skip
    used = np.ones(pred.size, dtype=bool)
    if settings.mode == "scale":
        scale, shift = float(np.median(target / pred)), 0.0
    else:
        for _ in range(_REFITS + 1):
            design = np.stack([pred[used], np.ones(int(used.sum()))], axis=1)
            (scale, shift), *_ = np.linalg.lstsq(design, target[used], rcond=None)
            residuals = target - (scale * pred + shift)
            mad = float(np.median(np.abs(residuals[used] - np.median(residuals[used]))))
            keep = np.abs(residuals) <= OUTLIER_MADS * max(mad, 1e-6) * 1.4826
            if (keep == used).all() or keep.sum() < minimum:
                break
            used = keep
    # Checked as applied: float32 (a float64 5e38 is finite; its float32 is inf).
    scale, shift, points = _float32(scale), _float32(shift), int(used.sum())
    if not (math.isfinite(scale) and math.isfinite(shift)):
        reason = f"scale {scale:.3g} / shift {shift:.3g} is not finite in float32"
        return AnchorFit(scale, shift, points, math.nan, "out_of_bounds", reason)
    with np.errstate(all="ignore"):
        fitted = to_space(scale * pred[used] + shift)
        residual = float(np.median(np.abs(metres[used] - fitted) / metres[used]))
    problem = _bounds_problem(scale, shift, settings)
    if not scale > 0:
        reason = f"scale {scale:.3g} is not > 0"
        return AnchorFit(scale, shift, points, residual, "unstable", reason)
    if problem:
        return AnchorFit(scale, shift, points, residual, "out_of_bounds", problem)
    if not residual <= settings.max_residual:
        return AnchorFit(scale, shift, points, residual, "unstable",
                         f"residual {residual:.3f} > {settings.max_residual}")  # fmt: skip
    return AnchorFit(scale, shift, points, residual, "anchored")


def _bounds_problem(scale: float, shift: float, settings: AnchorSettings) -> str:
    """Why a fit with a positive scale is out of bounds, or ''."""
    if settings.space == "inverse_depth":  # a relative model's scale is arbitrary
        if not abs(shift) <= 1.0 / settings.min_depth:
            return (f"shift {shift:.3g} 1/m is outside +-{1.0 / settings.min_depth:g} 1/m "
                    "(one over the minimum depth)")  # fmt: skip
        return ""
    factor = settings.max_scale_factor
    if scale > 0 and not 1.0 / factor <= scale <= factor:
        return f"scale {scale:.3g} is outside [{1.0 / factor:.3g}, {factor:g}] (max scale factor)"
    if not abs(shift) <= settings.max_depth:
        return f"shift {shift:.3g} m is outside +-{settings.max_depth:g} m (the depth range)"
    return ""


def _size(array: np.ndarray) -> str:
    shape = array.shape
    return f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)


class AnchoredFrame(NamedTuple):
    """What :meth:`AnchorTracker.anchor` made of one frame."""

    #: H×W float32 metres to publish; None when there is nothing metric to publish (a relative
    #: model before its first good fit).
    depth: np.ndarray | None
    outcome: str  # one of ANCHOR_OUTCOMES
    fit: AnchorFit | None  # the frame's own fit; None when nothing was fitted
    problem: str  # why the frame was not anchored ('' when it was)


class AnchorTracker:
    """The one anchoring implementation (module doc): fits per frame, bounded, smoothed over
    time (``smoothing`` is the weight of the previous fit). Unused fits leave the state alone.

    ``AnchorTracker(AnchorSettings(...))``, or a mode with overrides:
    ``AnchorTracker("scale", smoothing=0.75)``.
    """

    def __init__(self, settings: AnchorSettings | str = "scale", **overrides: object) -> None:
        self.settings = replace(_as_settings(settings), **overrides)  # type: ignore[arg-type]
        self.current: AnchorFit | None = None  # the smoothed fit being applied
        self.last = AnchorFit.identity()  # the latest frame's own fit
        # Fits rejected in a row for their change alone, each within the change of the one
        # before: RESEED_AFTER of them replace the smoothed fit.
        self._jumps = 0
        self._jump_scale = math.nan

    def anchor(
        self,
        prediction: np.ndarray,
        metric: np.ndarray | None,
        settings: AnchorSettings | None = None,
        absent: tuple[str, str] = ("missing", "no metric anchor for this frame"),
    ) -> AnchoredFrame:
        """One frame: ``prediction`` (H×W metres, NaN or <= 0 where the model has nothing;
        in space inverse_depth a relative model's output) clipped to the depth range (metres
        only), fitted to ``metric`` (H×W metres or None: ``absent`` says why, as (outcome,
        problem)), smoothed, applied and hole-filled under ``settings`` (default: the
        tracker's; given, they become the tracker's)."""
        s = self.settings = settings or self.settings
        pred = np.asarray(prediction, dtype=np.float32)
        if s.space == "depth":
            low, high = np.float32(s.min_depth), np.float32(s.max_depth)
            with np.errstate(invalid="ignore"):
                usable = np.isfinite(pred) & (pred > 0)
            pred = np.where(usable, np.clip(pred, low, high), pred).astype(np.float32)
        fit = None
        if metric is None:
            outcome, problem = absent
        elif s.mode == "none":
            outcome, problem = _fill_outcome(pred, metric, s)
        else:
            fit = self.update(pred, metric, s)
            outcome, problem = fit.outcome, "" if fit.stable else f"fit not used: {fit.reason}"
        fill_from = metric if s.fill == "holes" else None
        applied = self.current if s.mode != "none" else None
        if s.space != "depth" and applied is None:  # relative values are not metres yet
            return AnchoredFrame(None, outcome, fit, problem or "no good fit yet")
        depth = apply_anchor(pred, applied, fill_from, s.fill, s.depth_range, s.space)
        return AnchoredFrame(depth, outcome, fit, problem)

    def update(
        self, depth: np.ndarray, metric: np.ndarray, settings: AnchorSettings | None = None
    ) -> AnchorFit:
        """Fit this frame and fold it into the smoothed fit; returns the frame's own fit."""
        s = self.settings = settings or self.settings
        fit = fit_anchor(depth, metric, s)
        if fit.stable and self.current is not None:
            fit = self._check_change(fit, s)
        self.last = fit
        if not fit.stable:
            return fit
        if self.current is None:
            self.current = fit
        else:
            a, prev = s.smoothing, self.current
            self.current = AnchorFit(
                _float32(a * prev.scale + (1 - a) * fit.scale),
                _float32(a * prev.shift + (1 - a) * fit.shift),
                fit.points,
                fit.residual,
                "anchored",
            )
        return fit

    def _check_change(self, fit: AnchorFit, s: AnchorSettings) -> AnchorFit:
        """``fit`` unless its scale is more than ``max_scale_change`` from the smoothed one's
        (then out_of_bounds), or the latest of RESEED_AFTER such fits that agree (then it
        replaces the smoothed fit)."""
        assert self.current is not None
        change = s.max_scale_change
        ratio = fit.scale / self.current.scale
        if 1.0 / change <= ratio <= change:
            self._jumps = 0
            return fit
        agrees = 1.0 / change <= fit.scale / self._jump_scale <= change  # False while NaN
        self._jumps = self._jumps + 1 if agrees else 1
        self._jump_scale = fit.scale
        if self._jumps >= RESEED_AFTER:
            self._jumps = 0
            self.current = None  # the fold starts afresh from this fit
            return fit
        return replace(
            fit,
            outcome="out_of_bounds",
            reason=f"scale {fit.scale:.3g} is {ratio:.3g}x the smoothed {self.current.scale:.3g} "
            f"(max scale change {change:g})",
        )


def _fill_outcome(pred: np.ndarray, metric: np.ndarray, s: AnchorSettings) -> tuple[str, str]:
    """(outcome, problem) of a frame in mode none, where the metric depth only fills holes."""
    metric = np.asarray(metric)
    if metric.shape != pred.shape:
        return "wrong_size", f"metric depth is {_size(metric)} but depth is {_size(pred)}"
    if not anchor_mask(metric, s.depth_range).any():
        return "too_few_points", "no valid metric depth to fill holes with"
    return "filled", ""


def apply_anchor(
    depth: np.ndarray,
    fit: AnchorFit | None,
    metric: np.ndarray | None = None,
    fill: str = "none",
    depth_range: tuple[float, float] | None = None,
    space: str = "depth",
) -> np.ndarray:
    """``depth`` rescaled by ``fit`` (unchanged without one) on the pixels the model predicted
    (finite, > 0: a shift must not turn a NaN or the zero canvas around an input crop into a
    depth), clipped to ``depth_range`` when given; with ``fill='holes'`` the metric depth
    replaces it wherever it is an anchor (:func:`anchor_mask`). float32 throughout. In space
    inverse_depth ``depth`` is a relative model's output and the fit maps it to 1/metres."""
    if fill not in ANCHOR_FILLS:
        raise ValueError(f"anchor fill must be one of {ANCHOR_FILLS}, got {fill!r}")
    out = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(out) & (out > 0)
    if space == "inverse_depth":
        if fit is None:
            raise ValueError("a relative prediction needs a fit to become metres")
        with np.errstate(all="ignore"):
            inverse = out * np.float32(fit.scale) + np.float32(fit.shift)
            usable &= inverse > 0
            out = np.where(usable, np.float32(1.0) / inverse, np.float32(np.nan))
    elif fit is not None:
        scaled = out * np.float32(fit.scale) + np.float32(fit.shift)
        out = np.where(usable, scaled, out)
    if depth_range is not None:
        low, high = np.float32(depth_range[0]), np.float32(depth_range[1])
        out = np.where(usable, np.clip(out, low, high), out)
    if fill == "holes" and metric is not None and np.shape(metric) == out.shape:
        valid = anchor_mask(metric, depth_range or DEFAULT_DEPTH_RANGE)
        out = np.where(valid, metric, out)
    return np.asarray(out, dtype=np.float32)


def points_to_depth(
    points: np.ndarray, intrinsics: CameraIntrinsics, width: int, height: int
) -> np.ndarray:
    """Sparse H×W depth (NaN elsewhere) of N×3 optical-frame points (x right, y down, z
    forward) projected into a ``width``×``height`` image; the nearest point wins a pixel."""
    k = intrinsics.scaled(width, height)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] > 0)]
    u = np.floor(k.fx * points[:, 0] / points[:, 2] + k.cx + 0.5)
    v = np.floor(k.fy * points[:, 1] / points[:, 2] + k.cy + 0.5)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)  # before the cast: no overflow
    u, v, z = u[inside].astype(np.int64), v[inside].astype(np.int64), points[inside, 2]
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, v * width + u, z)
    depth[np.isinf(depth)] = np.nan
    return depth.reshape(height, width).astype(np.float32)


def sparse_subset(metric: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``metric`` with all but a random ``fraction`` of its valid pixels set to NaN: a dense
    depth camera standing in for a sparse sensor (bag evaluation)."""
    check_anchor_fraction(fraction)
    metric = np.asarray(metric, dtype=np.float32)
    keep = np.isfinite(metric) & (metric > 0) & (rng.random(metric.shape) < fraction)
    return np.where(keep, metric, np.float32(np.nan)).astype(np.float32)
