"""The one evaluation core: (prediction, ground truth, protocol, alignment) → per-frame metrics.

Bag evaluation (``moa-depth-bag eval``) and dataset evaluation (``moa-depth-evaluate``) both
score every frame with :func:`score_frame` and collect the frames in an :class:`Evaluation`,
whose :meth:`Evaluation.report` is written by ``report.write_report`` — so the same frame gives
the same numbers and the same files through either path.

A :class:`Protocol` fixes everything the published evaluations disagree on (docs/methods.md):
the depth range, the crop, and what happens to prediction pixels that are not finite and
positive. BTS / AdaBins clamp them (NaN → min, +inf → max) and score them; DepthCLIP keeps
only pixels with ``pred > 1e-3``. ROS-free, numpy + OpenCV.

What a prediction holds is its ``kind`` (``PREDICTION_KINDS``, the models' ``output_kind``):
``metric`` metres, or ``relative`` inverse depth up to an unknown scale and shift (Depth
Anything relative, MiDaS), which is scored only aligned in inverse depth
(``scale_shift_inverse``). That alignment comes first, on the pixels the model predicted, and
the protocol's handling of broken pixels applies to the depth it gives: relative values are
never clamped to a range of metres, and a metric pixel clamped to ``min_depth`` (1/min_depth in
inverse depth) would dominate the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.evaluation.metrics import (
    ALIGN_MODES,
    DEPTHCLIP_CROP,
    EIGEN_CROP,
    INVERSE_ALIGN,
    MetricAverager,
    align_prediction,
    compute_depth_metrics,
    valid_mask,
)
from moa_depth_ros.evaluation.report import EvalReport, GridSample
from moa_depth_ros.geometry import same_aspect

__all__ = [
    "NONFINITE_MODES",
    "PREDICTION_KINDS",
    "PROTOCOLS",
    "RESIZE_MODES",
    "Evaluation",
    "FrameScore",
    "Protocol",
    "alignment_for",
    "check_alignment",
    "evenly_spaced",
    "get_protocol",
    "score_frame",
]

#: "clamp": NaN → min_depth, ±inf → max/min_depth, then scored (BTS, AdaBins);
#: "reject": pixels whose prediction is not finite or not above ``min_prediction`` are left out.
NONFINITE_MODES = ("clamp", "reject")
#: What a prediction holds: metres, or relative inverse depth (module doc).
PREDICTION_KINDS = ("metric", "relative")
#: Prediction → ground-truth resampling when sizes differ. Nearest never invents depths:
#: bilinear blends foreground and background into "flying pixels" at depth edges.
RESIZE_MODES = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}
#: Largest relative difference of the prediction's and the ground truth's width/height ratios
#: that is resized without --allow-aspect-change.
PREDICTION_ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Protocol:
    """How one published evaluation scores a frame.

    ``scored_min_depth`` / ``scored_max_depth``: the ground truth scored (and where a clamping
    protocol clamps broken predictions); not a model's range, not the node's output clamp.
    ``crop`` = (top, bottom, left, right) pixel bounds, applied only to ground truth of
    ``crop_shape``; ``crop_fractions`` = the same as fractions of the height and width (KITTI).
    """

    name: str
    scored_min_depth: float = 1e-3
    scored_max_depth: float = 10.0
    crop: tuple[int, int, int, int] | None = None
    crop_shape: tuple[int, int] | None = None
    crop_fractions: tuple[float, float, float, float] | None = None
    nonfinite: str = "clamp"
    min_prediction: float | None = None
    #: (top, bottom, left, right) of the RGB the model sees, for frames of ``crop_shape``; the
    #: prediction is pasted into a zero canvas of the full size (DepthCLIP's pipeline).
    input_crop: tuple[int, int, int, int] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_depth_range(*self.scored_range, f"protocol '{self.name}'")
        if self.nonfinite not in NONFINITE_MODES:
            raise ValueError(f"protocol nonfinite must be one of {NONFINITE_MODES}")

    @property
    def scored_range(self) -> tuple[float, float]:
        """(scored_min_depth, scored_max_depth): the depths of ground truth that count."""
        return self.scored_min_depth, self.scored_max_depth

    def with_range(self, min_depth: float | None, max_depth: float | None) -> Protocol:
        """This protocol scoring another depth range (None keeps the protocol's value): what a
        user's ``--min-depth`` / ``eval.min_depth`` give."""
        low, high = self.scored_range
        return replace(
            self,
            scored_min_depth=low if min_depth is None else float(min_depth),
            scored_max_depth=high if max_depth is None else float(max_depth),
        )

    def crop_for(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The crop box for ground truth of ``shape`` (None: the whole frame counts)."""
        if self.crop_fractions is not None:
            height, width = shape
            top, bottom, left, right = self.crop_fractions
            return (int(top * height), int(bottom * height), int(left * width), int(right * width))
        if self.crop is not None and tuple(shape) == self.crop_shape:
            return self.crop
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            # Reports keep the names users know (--min-depth, eval.min_depth).
            "min_depth": self.scored_min_depth,
            "max_depth": self.scored_max_depth,
            "crop": self.crop,
            "crop_shape": self.crop_shape,
            "crop_fractions": self.crop_fractions,
            "nonfinite": self.nonfinite,
            "min_prediction": self.min_prediction,
            "input_crop": self.input_crop,
        }

    def predict(
        self,
        predict: Callable[..., np.ndarray],
        rgb: np.ndarray,
        prompt: np.ndarray | None = None,
    ) -> np.ndarray:
        """``predict(rgb)`` as this protocol runs the model: on the ``input_crop`` of a frame of
        ``crop_shape``, pasted into a zero canvas of the frame's size; else on the frame. A
        depth ``prompt`` registered to the image (``predict(rgb, prompt)``) is cropped alike."""
        args = () if prompt is None else (prompt,)
        if self.input_crop is None or tuple(rgb.shape[:2]) != self.crop_shape:
            return predict(rgb, *args)
        top, bottom, left, right = self.input_crop
        if prompt is not None and prompt.shape[:2] == rgb.shape[:2]:
            args = (np.ascontiguousarray(prompt[top:bottom, left:right]),)
        canvas = np.zeros(rgb.shape[:2], dtype=np.float32)
        crop = np.ascontiguousarray(rgb[top:bottom, left:right])
        canvas[top:bottom, left:right] = predict(crop, *args)
        return canvas


_NYU = (480, 640)
#: DepthCLIP's RGB crop (x 60:604, y 56:472) as (top, bottom, left, right).
DEPTHCLIP_INPUT_CROP = (56, 472, 60, 604)
#: KITTI crops as (top, bottom, left, right) fractions of the ground truth's height and width.
KITTI_EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
KITTI_GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "eigen",
            crop=EIGEN_CROP,
            crop_shape=_NYU,
            description="BTS/AdaBins NYU: Eigen crop [45:471, 41:601], 1e-3-10 m, "
            "non-finite predictions clamped and scored",
        ),
        Protocol(
            "depthclip",
            crop=DEPTHCLIP_CROP,
            crop_shape=_NYU,
            nonfinite="reject",
            min_prediction=1e-3,
            input_crop=DEPTHCLIP_INPUT_CROP,
            description="DepthCLIP/DepthBLIP-2 NYU: the model sees RGB [56:472, 60:604], its "
            "prediction is pasted into a zero 480x640 canvas; crop [45:471, 46:601], 1e-3-10 m, "
            "only pixels with pred > 1e-3",
        ),
        Protocol(
            "none",
            description="whole frame (SPACE-CLIP NYU), 1e-3-10 m, non-finite predictions "
            "clamped and scored",
        ),
        Protocol(
            "kitti_eigen",
            scored_max_depth=80.0,
            crop_fractions=KITTI_EIGEN_CROP,
            description="KITTI Eigen split: crop rows 0.3324-0.9135, cols 0.0359-0.9641 of the "
            "ground truth, 1e-3-80 m (SPACE-CLIP's eigen_crop)",
        ),
        Protocol(
            "kitti_garg",
            scored_max_depth=80.0,
            crop_fractions=KITTI_GARG_CROP,
            description="KITTI Eigen split, Garg crop: rows 0.4081-0.9919, cols 0.0359-0.9641, "
            "1e-3-80 m (BTS / AdaBins garg_crop)",
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The named protocol; ValueError listing the known ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


@dataclass
class FrameScore:
    """One scored frame: metrics (None when no pixel was valid), the prediction as scored
    (resized to the ground truth, aligned) and the mask of the pixels that counted."""

    metrics: dict[str, float] | None
    pred: np.ndarray
    valid: np.ndarray


def _resize_to(
    pred: np.ndarray, shape: tuple[int, int], resize: str, allow_aspect_change: bool
) -> np.ndarray:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {tuple(RESIZE_MODES)}, got {resize!r}")
    if not allow_aspect_change and not same_aspect(pred.shape, shape, PREDICTION_ASPECT_TOLERANCE):
        raise ValueError(
            f"prediction {pred.shape[1]}x{pred.shape[0]} and ground truth {shape[1]}x{shape[0]} "
            "have different aspect ratios (pass an explicit aspect-changing resize to score it)"
        )
    return cv2.resize(pred, (shape[1], shape[0]), interpolation=RESIZE_MODES[resize])


def check_alignment(kind: str, align: str) -> None:
    """ValueError unless predictions of ``kind`` can be scored with ``align``: a relative
    prediction only with the inverse-depth alignment (it has no scale and no shift, and it is
    inverse depth: aligning it as depth fits the wrong curve)."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"prediction kind must be one of {PREDICTION_KINDS}, got {kind!r}")
    if kind == "relative" and align != INVERSE_ALIGN:
        raise ValueError(
            "a relative prediction is inverse depth up to an unknown scale and shift: it is "
            f"scored aligned with {INVERSE_ALIGN} (or anchored), not with align {align}"
        )


def alignment_for(kind: str, align: str) -> tuple[str, str]:
    """(the alignment predictions of ``kind`` are scored with, how a report says it): a
    relative model given none is aligned in inverse depth, which the report notes; any other
    choice is as given (``check_alignment`` refuses the ones that cannot score ``kind``)."""
    if kind == "relative" and align == "none":
        return INVERSE_ALIGN, f"{INVERSE_ALIGN} (relative model)"
    return align, align


def _inverse_depth(pred: np.ndarray, kind: str) -> np.ndarray:
    """A prediction as inverse depth: a relative model's values where finite and > 0 (as
    anchoring reads them: anything else is no prediction), or 1/metres (+inf: 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "relative":
            return np.where(np.isfinite(pred) & (pred > 0), pred, np.float32(np.nan))
        return np.where(pred > 0, np.float32(1.0) / pred, np.float32(np.nan))


def score_frame(
    pred: np.ndarray,
    gt: np.ndarray,
    protocol: Protocol,
    align: str = "none",
    resize: str = "nearest",
    allow_aspect_change: bool = False,
    kind: str = "metric",
) -> FrameScore:
    """Score one H×W prediction (metres, or with ``kind`` relative a relative model's inverse
    depth) against H×W ground truth under ``protocol``.

    A prediction of another size is resized with ``resize`` when its aspect ratio matches
    (ValueError otherwise, unless ``allow_aspect_change``). With ``align`` the prediction is
    first aligned per frame on the counted pixels (relative-depth models); a relative one only
    with ``scale_shift_inverse`` (:func:`check_alignment`).
    """
    check_alignment(kind, align)
    gt = np.asarray(gt, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be H×W")
    if pred.shape != gt.shape:
        pred = _resize_to(pred, gt.shape, resize, allow_aspect_change)
    lo, hi = protocol.scored_range
    crop = protocol.crop_for(gt.shape)
    if align == INVERSE_ALIGN:  # aligned before the protocol's clamp (module doc)
        inverse = _inverse_depth(pred, kind)
        pred = align_prediction(inverse, gt, align, valid_mask(gt, inverse, lo, hi, crop))
        align = "none"
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(pred) & (pred > 0)
        if protocol.min_prediction is not None:
            usable &= pred > protocol.min_prediction
    if protocol.nonfinite == "clamp":
        # BTS / AdaBins: every pixel with ground truth is scored; a broken prediction costs.
        pred = np.nan_to_num(pred, nan=lo, posinf=hi, neginf=lo)
        mask = None
    else:
        mask = usable
    valid = valid_mask(gt, pred, lo, hi, crop, mask)
    aligned = align_prediction(pred, gt, align, valid)
    metrics = compute_depth_metrics(aligned, gt, lo, hi, crop, mask)
    if metrics is not None:
        # The share of scored pixels the model actually predicted (finite and positive):
        # clamping hides broken predictions in the errors; this shows them directly.
        metrics["pred_usable"] = float(usable[valid].mean())
    return FrameScore(metrics, aligned, valid)


def evenly_spaced(count: int, wanted: int) -> set[int]:
    """``wanted`` evenly spaced positions in range(count), first and last included."""
    if count == 0 or wanted <= 0:
        return set()
    return {int(round(x)) for x in np.linspace(0, count - 1, min(wanted, count))}


@dataclass
class Evaluation:
    """Collects scored frames into an :class:`EvalReport` (first row: the prediction).

    ``baseline_depth`` adds a reference row scoring a constant prediction of that depth (a
    metric one, with the same ``align``). ``kind``: what the predictions given to :meth:`add`
    hold (``PREDICTION_KINDS``; an anchored relative model's are metric).
    """

    protocol: Protocol
    align: str = "none"
    resize: str = "nearest"
    allow_aspect_change: bool = False
    baseline_depth: float | None = None
    label: str = "prediction"
    kind: str = "metric"
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[Any, GridSample, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_alignment(self.kind, self.align)
        if self.baseline_depth is not None and not self.baseline_depth > 0:
            raise ValueError(f"baseline depth must be > 0 m, got {self.baseline_depth}")
        self.rows = {self.label: MetricAverager()}
        if self.baseline_depth is not None:
            self.rows[f"constant {self.baseline_depth:g} m baseline"] = MetricAverager()

    @property
    def evaluated(self) -> int:
        return self.rows[self.label].count

    @property
    def without_valid_pixels(self) -> int:
        return self.rows[self.label].skipped

    def add(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        info: dict[str, Any],
        order: Any = None,
        sample_label: str | None = None,
        rgb: np.ndarray | None = None,
    ) -> tuple[FrameScore, GridSample | None]:
        """Score one frame. ``info`` goes into its per-frame row, ``order`` sorts the rows
        (default: arrival); with ``sample_label`` the frame is kept for the picture grid (its
        ``rgb`` may be set on the returned sample later)."""
        score = score_frame(
            pred, gt, self.protocol, self.align, self.resize, self.allow_aspect_change, self.kind
        )
        averagers = iter(self.rows.values())
        next(averagers).update(score.metrics)
        if self.baseline_depth is not None:
            constant = np.full(np.shape(gt), self.baseline_depth, dtype=np.float32)
            next(averagers).update(score_frame(constant, gt, self.protocol, self.align).metrics)
        order = len(self.per_frame) if order is None else order
        sample = None
        if score.metrics is not None:
            self.per_frame.append({"_order": order, **info, **score.metrics})
            if sample_label is not None:
                sample = GridSample(sample_label, np.asarray(gt, np.float32), score.pred, rgb)
                self.samples.append((order, sample, score.valid))
        return score, sample

    def add_unpredicted(
        self,
        gt: np.ndarray,
        order: Any,
        sample_label: str | None,
        rgb: np.ndarray | None = None,
    ) -> GridSample | None:
        """A frame the model gave nothing for (no depth prompt, nothing published before a
        first fit): not scored, but a sampled one stays in the picture grid with an empty
        prediction, so every model of a comparison shows the same frames."""
        if sample_label is None:
            return None
        gt = np.asarray(gt, dtype=np.float32)
        sample = GridSample(sample_label, gt, np.full(gt.shape, np.nan, np.float32), rgb)
        self.samples.append((order, sample, np.zeros(gt.shape, dtype=bool)))
        return sample

    def report(
        self, source: str, counts: dict[str, int], settings: dict[str, Any], title: str
    ) -> tuple[EvalReport, list[GridSample], list[np.ndarray]]:
        """The report (frames numbered in ``order``) and the picture-grid samples and masks."""
        rows = {label: averager.compute() for label, averager in self.rows.items()}
        ordered_rows = sorted(self.per_frame, key=lambda row: row["_order"])
        per_frame = [
            {"frame": number, **{k: v for k, v in row.items() if k != "_order"}}
            for number, row in enumerate(ordered_rows)
        ]
        ordered = sorted(self.samples, key=lambda item: item[0])
        settings = {
            "protocol": self.protocol.to_dict(),
            "align": self.align,
            **settings,
        }
        report = EvalReport(source, rows, per_frame, counts, settings, title)
        return report, [s for _, s, _ in ordered], [v for _, _, v in ordered]
