"""Evaluate depth predictions against ground truth stored in a bag (offline, no ROS graph).

Predictions either come from running a checkpoint on the bag's images, or are read from a
topic recorded in the bag (a node's ``depth/image``, 32FC1 or 16UC1). Predictions and ground
truth are paired one-to-one by ``header.stamp`` within ``slop`` (``bags.pairing``); each pair
is scored by the shared evaluation core (``moa_depth_ros.evaluation.scoring``) under a named
protocol, per frame and as the per-frame mean, exactly as ``moa-depth-evaluate`` scores a dataset.

With ``anchor_topic`` each prediction is first anchored to metric depth recorded in the bag
(paired by stamp with the prediction) by the node's own anchoring implementation
(``moa_depth_ros.anchoring.AnchorTracker``, the same settings, the same outcome names,
clipped to the scoring range as the node clips to its own): so a recording measures exactly
what the node would publish. The anchor topic may be the ground truth itself with
``anchor_fraction`` (a random fraction of its pixels, what a sparse sensor would give).

What the model gives decides how it is scored (:class:`Predictor`, from the estimator's
``output_kind`` and ``takes_depth_prompt``):

- metric: metres, scored as they are (or with ``align``, or anchored in depth).
- relative (inverse depth up to scale and shift): without an anchor topic, aligned per frame
  to the ground truth in inverse depth (``scale_shift_inverse``, said so in the report); a
  depth-space ``align`` is refused. With an anchor topic it is anchored in inverse depth, as
  the node anchors it; frames before the first good fit have nothing published: they are not
  scored, and counted (``unpublished_no_fit``).
- a depth prompt (Prompt Depth Anything): the anchor topic is its prompt, as the node gives it
  (the same ``anchor_fraction`` subset, drawn in the same order with the same seed as for a
  fit); the frame is predicted once its image, ground truth and anchor are read, and no fit is
  applied on top (the fit options do not apply; the report says ``anchor_mode: depth_prompt``).
  A frame without a usable prompt is not predicted, and counted (``anchor_frames_<outcome>``).
  Without an anchor topic such a model is refused.

Two passes over the bag keep memory flat on long recordings: the first reads only stamps and
decides the pairs (and each pair's anchor), the second decodes, predicts and scores each pair as
soon as all of its parts have been read, then drops them (only the few frames for the picture
grid are kept). Pairs are scored in prediction-stamp order, the order the node sees its frames,
because the anchor fit is smoothed over time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from moa_depth_ros.anchoring import (
    ANCHOR_OUTCOMES,
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_MAX_SCALE_CHANGE,
    DEFAULT_MAX_SCALE_FACTOR,
    DEFAULT_MIN_POINTS,
    DEFAULT_SMOOTHING,
    LIVE_OUTCOMES,
    AnchorSettings,
    AnchorTracker,
    anchor_mask,
    check_anchor_fraction,
    sparse_subset,
)
from moa_depth_ros.bags.io import CAMERA_INFO, COMPRESSED, IMAGE, BagError, BagReader
from moa_depth_ros.bags.pairing import pair_by_stamp
from moa_depth_ros.evaluation.metrics import ALIGN_MODES, DEPTH_ALIGN_MODES, INVERSE_ALIGN
from moa_depth_ros.evaluation.report import EvalReport, GridSample
from moa_depth_ros.evaluation.scoring import (
    RESIZE_MODES,
    Evaluation,
    Protocol,
    evenly_spaced,
    get_protocol,
)
from moa_depth_ros.msgs.image_codec import (
    DEPTH_ENCODINGS,
    ImageDecodeError,
    image_msg_to_array,
)
from moa_depth_ros.msgs.stamps import header_stamp_ns

__all__ = [
    "BAG_ANCHOR_OUTCOMES",
    "PROMPT_OUTCOMES",
    "EvalResult",
    "EvalSettings",
    "Predictor",
    "estimator_predictor",
    "evaluate_bag",
]


@dataclass
class EvalSettings:
    """What to evaluate and how; the CLI's choices and defaults come from here."""

    image_topic: str
    gt_topic: str
    checkpoint: str | None = None
    pred_topic: str | None = None
    camera_info_topic: str | None = None
    protocol: str = "none"
    align: str = "none"
    min_depth: float | None = None  # None: the protocol's range
    max_depth: float | None = None
    slop: float = 0.01  # s; at most half a frame period, or neighbours can pair up
    resize: str = "nearest"
    allow_aspect_change: bool = False  # resize predictions of another aspect ratio too
    device: str = "auto"
    precision: str = "fp32"
    samples: int = 4
    baseline_depth: float | None = None
    #: Metric depth (16UC1 mm / 32FC1 m) registered to the prediction, paired by stamp.
    anchor_topic: str | None = None
    anchor_fraction: float | None = None  # keep this random share of its pixels; None: all
    anchor_mode: str = "scale"
    anchor_smoothing: float = DEFAULT_SMOOTHING
    anchor_fill: str = "none"
    anchor_min_points: int = DEFAULT_MIN_POINTS
    anchor_max_residual: float = DEFAULT_MAX_RESIDUAL
    anchor_max_scale_factor: float = DEFAULT_MAX_SCALE_FACTOR
    anchor_max_scale_change: float = DEFAULT_MAX_SCALE_CHANGE
    anchor_seed: int = 0  # of the random subset, so a run can be repeated

    def scoring_protocol(self) -> Protocol:
        return get_protocol(self.protocol).with_range(self.min_depth, self.max_depth)

    def anchor_settings(self, space: str = "depth") -> AnchorSettings:
        """The anchoring core's settings, as the node maps its parameters onto them; the
        published range is the scoring range (give the node's min/max depth to match it).
        ``space``: inverse_depth for a relative model, as the node anchors it.

        Raises:
            ValueError: a setting (or combination) the core refuses, naming it.
        """
        protocol = self.scoring_protocol()
        return AnchorSettings.from_prefixed(
            asdict(self), space=space, min_depth=protocol.min_depth, max_depth=protocol.max_depth
        )

    def check(self) -> None:
        if (self.checkpoint is None) == (self.pred_topic is None):
            raise ValueError("give exactly one of a checkpoint and a prediction topic")
        if self.gt_topic in (self.pred_topic, self.image_topic):
            raise ValueError(f"the ground-truth topic '{self.gt_topic}' is also an input topic")
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got '{self.align}'")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {tuple(RESIZE_MODES)}, got '{self.resize}'")
        self.scoring_protocol()  # checks the protocol name and the depth range
        if not self.slop >= 0:
            raise ValueError(f"slop must be >= 0 s, got {self.slop}")
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if self.baseline_depth is not None and not self.baseline_depth > 0:
            raise ValueError(f"baseline depth must be > 0 m, got {self.baseline_depth}")
        self._check_anchoring()

    def _check_anchoring(self) -> None:
        if self.anchor_topic is None:
            defaults = {f.name: f.default for f in fields(self) if f.name.startswith("anchor_")}
            changed = [k for k, v in defaults.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(f"{', '.join(changed)} set without an anchor topic")
            return
        if self.anchor_topic in (self.pred_topic, self.image_topic):
            raise ValueError(f"the anchor topic '{self.anchor_topic}' is also an input topic")
        if self.anchor_mode == "none" and self.anchor_fill == "none":
            # Fine for a prompt model (it fits nothing anyway); refused for the others once the
            # model is known (_plan). Every other setting is checked now.
            replace(self, anchor_fill="holes").anchor_settings()
        else:
            self.anchor_settings()
        check_anchor_fraction(self.anchor_fraction)

    @property
    def anchor_source(self) -> str:
        """The anchor topic as a report says it: its name and the share of it used."""
        fraction = self.anchor_fraction
        used = "" if fraction is None else f" ({100 * fraction:g} % of its pixels)"
        return f"{self.anchor_topic}{used}"


#: The settings only a fit uses (not a prompt model, which takes the anchor as its input).
FIT_SETTINGS = (
    "anchor_mode",
    "anchor_smoothing",
    "anchor_fill",
    "anchor_min_points",
    "anchor_max_residual",
    "anchor_max_scale_factor",
    "anchor_max_scale_change",
)


@dataclass
class Predictor:
    """A model as bag evaluation runs it: ``predict(rgb)`` (``predict(rgb, prompt)`` when it
    takes a depth prompt) → H×W float32, metres or, for ``output_kind`` relative, inverse depth
    up to scale and shift. ``seconds`` gets each forward's own time (the estimator's: its
    preprocessing, network and resize to the image; nothing of the bag, the anchoring or the
    scoring). ``name`` says which model in errors."""

    predict: Callable[..., np.ndarray]
    output_kind: str = "metric"
    takes_depth_prompt: bool = False
    seconds: list[float] = field(default_factory=list)
    name: str = "the model"


@dataclass(frozen=True)
class _Plan:
    """How one model's frames are made and scored (from the settings and the model)."""

    kind: str  # what the scored predictions hold: metric, or relative (a relative model unanchored)
    align: str  # what score_frame applies
    fit_space: str | None  # the anchoring's fit space; None: no fit
    prompt: bool  # the anchor topic is the model's depth prompt
    notes: dict[str, Any]  # what the report's settings say about it


def _plan(settings: EvalSettings, predictor: Predictor | None) -> _Plan:
    """How ``predictor`` (None: recorded predictions, metres) is scored under ``settings``
    (module doc); ValueError, naming the model, for what cannot be scored honestly."""
    name = predictor.name if predictor is not None else "the recorded prediction"
    kind = predictor.output_kind if predictor is not None else "metric"
    prompt = predictor is not None and predictor.takes_depth_prompt
    anchored = settings.anchor_topic is not None
    if prompt and not anchored:
        raise ValueError(
            f"{name} takes a depth prompt (metric depth registered to the image): give it with "
            "--anchor-topic (with --anchor-fraction to simulate a sparse sensor)"
        )
    notes: dict[str, Any] = {}
    if predictor is not None:
        notes["model_output"] = kind
    fit_space = None
    if anchored and not prompt:
        fit_space = "inverse_depth" if kind == "relative" else "depth"
        if kind == "relative" and settings.anchor_mode == "none":
            raise ValueError(
                f"{name} gives relative depth, not metres: --anchor-mode none fits nothing, so "
                "nothing would be published; use scale or scale_shift"
            )
        settings.anchor_settings(fit_space)  # mode none with fill none: refused here
        if fit_space == "inverse_depth":
            notes["anchor_space"] = fit_space
        kind = "metric"  # anchored: metres
    if prompt:
        notes["anchor_mode"] = "depth_prompt"
    align, notes["align"] = settings.align, settings.align
    if kind == "relative":
        if align in DEPTH_ALIGN_MODES:
            raise ValueError(
                f"{name} gives relative inverse depth (unknown scale and shift): --align {align} "
                f"aligns depth, not inverse depth; use --align {INVERSE_ALIGN} (what a relative "
                "model gets by default) or anchor it with --anchor-topic"
            )
        if align == "none":
            align, notes["align"] = INVERSE_ALIGN, f"{INVERSE_ALIGN} (relative model)"
    notes["scored"] = _scored(settings, kind, align, fit_space, prompt, predictor)
    return _Plan(kind, align, fit_space, prompt, notes)


def _scored(
    settings: EvalSettings,
    kind: str,
    align: str,
    fit_space: str | None,
    prompt: bool,
    predictor: Predictor | None,
) -> str:
    """One line: how a model's frames were scored (the report's settings, per model)."""
    if predictor is None:
        what = f"recorded predictions ({settings.pred_topic}), metres"
    elif predictor.output_kind == "relative":
        what = "relative inverse depth (unknown scale and shift)"
    else:
        what = "metres"
    steps = []
    if prompt:
        steps.append(f"{settings.anchor_source} as its depth prompt, no fit")
    elif fit_space is not None:
        space = "in inverse depth" if fit_space == "inverse_depth" else "in depth"
        steps.append(
            f"anchored to {settings.anchor_source} as the node anchors: {settings.anchor_mode} "
            f"fit {space}"
        )
    if align == INVERSE_ALIGN and kind == "relative":
        steps.append(
            f"aligned per frame to the ground truth ({INVERSE_ALIGN}: 1/(s*pred + t), s and t "
            "fitted to 1/ground truth; optimistic against metric models)"
        )
    elif align != "none":
        steps.append(f"aligned per frame to the ground truth ({align})")
    return f"{what}; {'; '.join(steps) or 'as predicted'}"


@dataclass
class EvalResult:
    report: EvalReport
    samples: list[GridSample] = field(default_factory=list)
    valid_masks: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Pair:
    pred_index: int
    gt_index: int
    pred_stamp: int
    gt_stamp: int
    sample: bool = False
    anchor_index: int | None = None  # the anchor message paired with the prediction, if any
    pred: np.ndarray | None = None
    gt: np.ndarray | None = None
    rgb: np.ndarray | None = None
    image: np.ndarray | None = None  # a prompt model's input, predicted once the anchor is read
    anchor: np.ndarray | None = None
    anchor_read: bool = False  # its anchor message was read (anchor stays None if broken)
    dropped: bool = False  # a part could not be decoded: the pair is not scored

    @property
    def ready(self) -> bool:
        """Every part read (or the pair dropped): it can be scored and its pixels freed."""
        anchored = self.anchor_index is None or self.anchor_read
        predicted = self.pred is not None or self.image is not None
        return self.dropped or (predicted and self.gt is not None and anchored)

    def free(self) -> None:
        self.pred = self.gt = self.rgb = self.image = self.anchor = None


#: The outcomes a bag can give (the live-only ones need frame_ids, clocks and clouds), counted
#: in the report as the node's /diagnostics counts them: ``anchor_frames_<outcome>``.
BAG_ANCHOR_OUTCOMES = tuple(
    o for o in ANCHOR_OUTCOMES if o not in LIVE_OUTCOMES and o != "prompted"
)
#: What a prompt model's frames can come to in a bag (the node's names): the anchor was its
#: prompt, or the frame is not predicted for want of one.
PROMPT_OUTCOMES = ("prompted", "missing", "wrong_size", "too_few_points")


class _Anchoring:
    """The node's anchoring (the one ``AnchorTracker``), applied offline frame by frame, with
    what it did counted."""

    def __init__(self, settings: EvalSettings, space: str = "depth") -> None:
        self.settings = settings
        self.anchor_settings = settings.anchor_settings(space)
        self.tracker = AnchorTracker(self.anchor_settings)
        self.rng = np.random.default_rng(settings.anchor_seed)
        self.counts = {f"anchor_frames_{outcome}": 0 for outcome in BAG_ANCHOR_OUTCOMES}
        self.scales: list[float] = []  # each anchored frame's own fit
        self.shifts: list[float] = []
        self.points: list[int] = []  # anchors per fitted frame, used or not

    def apply(self, pred: np.ndarray, metric: np.ndarray | None) -> tuple[np.ndarray | None, dict]:
        """``pred`` anchored with this frame's ``metric`` (None: none paired or unreadable), and
        the per-frame row entries. The metric must be registered to the prediction at its size,
        as the node needs it: the fit is made on the prediction as the model gave it, before
        it is resized to the ground truth for scoring. Another size is counted, not resized.
        The depth is None when there is nothing to publish (a relative model before its first
        good fit)."""
        if (
            metric is not None
            and self.settings.anchor_fraction is not None
            and metric.shape == pred.shape
        ):
            metric = sparse_subset(metric, self.settings.anchor_fraction, self.rng)
        frame = self.tracker.anchor(pred, metric, self.anchor_settings)
        self.counts[f"anchor_frames_{frame.outcome}"] += 1
        own = frame.fit
        if own is not None and own.outcome != "wrong_size":  # a wrong size was no fit
            self.points.append(own.points)
            if own.stable:
                self.scales.append(own.scale)
                self.shifts.append(own.shift)
        points = own.points if own is not None else 0
        if frame.outcome == "filled":  # no fit: the anchors that filled holes
            points = int(anchor_mask(metric, self.anchor_settings.depth_range).sum())
        # Frames without a usable anchor keep the smoothed fit, as the node keeps publishing.
        fit = self.tracker.current if self.anchor_settings.mode != "none" else None
        row = {
            "anchor": frame.outcome,
            "anchor_points": points,
            "anchor_scale": fit.scale if fit is not None else math.nan,
            "anchor_shift": fit.shift if fit is not None else math.nan,
        }
        return frame.depth, row

    def summary(self) -> dict[str, Any]:
        """The report's "anchoring" section: what the fits found, over the anchored frames (for
        a relative model in inverse depth: 1/m = scale * output + shift)."""
        summary: dict[str, Any] = {"mode": self.settings.anchor_mode}
        if self.anchor_settings.space == "inverse_depth":
            summary["space"] = "inverse_depth (1/m = scale * output + shift)"
        return {
            **summary,
            "mean_scale": float(np.mean(self.scales)) if self.scales else math.nan,
            "mean_shift": float(np.mean(self.shifts)) if self.shifts else math.nan,
            "median_points": float(np.median(self.points)) if self.points else math.nan,
        }


class _Prompting:
    """A prompt model's depth prompt per frame, as the node gives it
    (``node.anchors.CameraAnchoring.prompt_for``): the anchor at the image's size, pixels
    outside the depth range as holes; none (the frame is not predicted) when it is missing, of
    another size or without a valid pixel. The ``anchor_fraction`` subset is drawn as
    :class:`_Anchoring` draws it (same seed, same frames, same order), so a prompt model and a
    fitted one see the same sparse anchors."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        protocol = settings.scoring_protocol()
        self.depth_range = (protocol.min_depth, protocol.max_depth)
        self.rng = np.random.default_rng(settings.anchor_seed)
        self.counts = {f"anchor_frames_{outcome}": 0 for outcome in PROMPT_OUTCOMES}
        self.points: list[int] = []  # valid prompt pixels per prompted frame

    def prompt(
        self, metric: np.ndarray | None, image_hw: tuple[int, int]
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The frame's prompt (H×W float32 metres, NaN holes) or None, and its row entries."""
        prompt, points = None, 0
        if metric is None:
            outcome = "missing"
        elif metric.shape != tuple(image_hw):
            outcome = "wrong_size"
        else:
            if self.settings.anchor_fraction is not None:
                metric = sparse_subset(metric, self.settings.anchor_fraction, self.rng)
            valid = anchor_mask(metric, self.depth_range)
            points = int(valid.sum())
            outcome = "prompted" if points else "too_few_points"
            if points:
                prompt = np.where(valid, metric, np.float32(np.nan)).astype(np.float32)
                self.points.append(points)
        self.counts[f"anchor_frames_{outcome}"] += 1
        return prompt, {"anchor": outcome, "anchor_points": points}

    def summary(self) -> dict[str, Any]:
        """The report's "anchoring" section for a prompt model."""
        return {
            "mode": "depth_prompt",
            "median_points": float(np.median(self.points)) if self.points else math.nan,
        }


def _decode_depth(reader: BagReader, message: Any, topic: str) -> np.ndarray:
    msg = reader.decode(message)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise BagError(
            f"topic '{topic}' in bag '{reader.path}' has encoding '{msg.encoding}'; depth must "
            f"be one of {', '.join(sorted(DEPTH_ENCODINGS))} (REP 118)"
        )
    return image_msg_to_array(msg)


def _read_stamps(reader: BagReader, topics: list[str]) -> dict[str, list[int]]:
    """Header stamps of every message on ``topics``, by topic, in bag order (pass 1)."""
    stamps: dict[str, list[int]] = {topic: [] for topic in topics}
    for message in reader.messages(topics):
        stamps[message.topic].append(header_stamp_ns(reader.decode(message)))
    return stamps


class _Evaluator:
    def __init__(
        self,
        reader: BagReader,
        settings: EvalSettings,
        predictor: Predictor | None,
        plan: _Plan,
        on_prediction: Callable[[int, np.ndarray], None] | None = None,
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.predictor = predictor
        self.on_prediction = on_prediction
        self.scoring = settings.scoring_protocol()
        self.evaluation = Evaluation(
            self.scoring,
            plan.align,
            settings.resize,
            settings.allow_aspect_change,
            baseline_depth=settings.baseline_depth,
            kind=plan.kind,
        )
        self.anchoring = _Anchoring(settings, plan.fit_space) if plan.fit_space else None
        self.prompting = _Prompting(settings) if plan.prompt else None
        self.unpublished = 0  # relative model, anchored: frames before the first good fit
        self.undecodable = 0
        # Pairs still waiting for a part, by role ("gt", "pred", "anchor", "rgb") and message.
        self.by_role: dict[str, dict[int, _Pair]] = {}
        # Grid samples still waiting for their image (recorded prediction topic).
        self.samples: dict[int, GridSample] = {}

    def finish_pair(self, pair: _Pair) -> None:
        assert pair.gt is not None
        info: dict[str, Any] = {
            "pred_stamp_ns": pair.pred_stamp,
            "gt_stamp_ns": pair.gt_stamp,
            "stamp_diff_ms": (pair.pred_stamp - pair.gt_stamp) / 1e6,
        }
        if self.prompting is not None:  # the prompt model runs now: its anchor has been read
            assert pair.image is not None and self.predictor is not None
            prompt, prompt_info = self.prompting.prompt(pair.anchor, pair.image.shape[:2])
            info.update(prompt_info)
            if prompt is None:  # no prompt, no prediction (counted)
                self._unpredicted(pair)
                return
            pair.pred = self.scoring.predict(self.predictor.predict, pair.image, prompt)
        assert pair.pred is not None
        pred = pair.pred
        if self.anchoring is not None:  # after the protocol's input crop
            anchored, anchor_info = self.anchoring.apply(pred, pair.anchor)
            if anchored is None:  # a relative model before its first good fit: nothing yet
                self.unpublished += 1
                self._unpredicted(pair)
                return
            pred = anchored
            info.update(anchor_info)
        if self.on_prediction is not None:
            self.on_prediction(pair.pred_stamp, pred)
        _, sample = self.evaluation.add(
            pred, pair.gt, info, order=pair.gt_stamp, sample_label=self._label(pair), rgb=pair.rgb
        )
        if sample is not None and sample.rgb is None:
            self.samples[id(pair)] = sample
        pair.free()

    @staticmethod
    def _label(pair: _Pair) -> str | None:
        return f"stamp {pair.gt_stamp / 1e9:.3f} s" if pair.sample else None

    def _unpredicted(self, pair: _Pair) -> None:
        """A pair the model gave nothing for: not scored; in the grid when sampled."""
        assert pair.gt is not None
        self.evaluation.add_unpredicted(pair.gt, pair.gt_stamp, self._label(pair), pair.rgb)
        pair.free()

    def run(self, pairs: list[_Pair], rgb_for_sample: dict[int, _Pair], progress: Any) -> None:
        """Pass 2: read each message into the pairs it belongs to; score pairs in prediction
        stamp order as they become ready (a later frame waits for an earlier one's parts)."""
        self.by_role = {
            "gt": {p.gt_index: p for p in pairs},
            "pred": {p.pred_index: p for p in pairs},
            "anchor": {p.anchor_index: p for p in pairs if p.anchor_index is not None},
            "rgb": rgb_for_sample,
        }
        waiting = deque(sorted(pairs, key=lambda p: (p.pred_stamp, p.pred_index)))
        for message in self.reader.messages(self._topics()):
            progress.update()
            self._read(message)
            while waiting and waiting[0].ready:
                pair = waiting.popleft()
                if not pair.dropped:
                    self.finish_pair(pair)

    def _topics(self) -> list[str]:
        s = self.settings
        topics = [s.image_topic, s.gt_topic, s.pred_topic, s.anchor_topic]
        return list(dict.fromkeys(t for t in topics if t is not None))

    def _roles(self, message: Any) -> list[tuple[str, _Pair]]:
        """What ``message`` is to which pair; the anchor topic may be the ground truth's, so
        one depth message can be one pair's ground truth and (another) pair's anchor."""
        s, topic, index = self.settings, message.topic, message.index
        wanted = [("gt", s.gt_topic), ("anchor", s.anchor_topic)]
        if s.pred_topic is None:
            wanted.append(("pred", s.image_topic))  # predicted from the image
        else:
            wanted += [("pred", s.pred_topic), ("rgb", s.image_topic)]
        return [
            (role, self.by_role[role].pop(index))
            for role, role_topic in wanted
            if topic == role_topic and index in self.by_role[role]
        ]

    def _read(self, message: Any) -> None:
        roles = [(role, pair) for role, pair in self._roles(message) if not pair.dropped]
        if not roles:
            return
        try:
            if message.topic == self.settings.image_topic:  # never a depth topic (check())
                data = self.reader.decode_rgb(message)
            else:
                data = _decode_depth(self.reader, message, message.topic)
        except ImageDecodeError:
            # One broken message costs one frame (or its anchor), not the evaluation; counted.
            self.undecodable += 1
            data = None
        for role, pair in roles:
            self._store(role, pair, data)

    def _store(self, role: str, pair: _Pair, data: np.ndarray | None) -> None:
        if role == "rgb":
            if data is not None:
                self._attach_rgb(pair, data)
            return
        if role == "anchor":
            pair.anchor, pair.anchor_read = data, True  # scored unanchored when unreadable
        elif data is None:
            pair.dropped = True
        elif role == "gt":
            pair.gt = data
        elif self.settings.pred_topic is not None:
            pair.pred = data
        elif self.prompting is not None:  # predicted with its prompt (finish_pair)
            pair.image = data
            pair.rgb = data if pair.sample else None
        else:
            assert self.predictor is not None
            pair.pred = self.scoring.predict(self.predictor.predict, data)
            pair.rgb = data if pair.sample else None
        if pair.dropped:
            pair.free()

    def _attach_rgb(self, pair: _Pair, rgb: np.ndarray) -> None:
        """The image of a sampled pair: on its grid sample if scored already, else kept."""
        sample = self.samples.pop(id(pair), None)
        if sample is not None:
            sample.rgb = rgb
        else:
            pair.rgb = rgb


def evaluate_bag(
    bag: str | Path,
    settings: EvalSettings,
    predict: Predictor | Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
    on_prediction: Callable[[int, np.ndarray], None] | None = None,
) -> EvalResult:
    """Evaluate one bag (see module doc).

    Args:
        predict: the model (:class:`Predictor`), or a function RGB H×W×3 uint8 → depth H×W
            float32 metres; built from ``settings.checkpoint`` when None and the settings ask
            for a checkpoint.
        on_prediction: called with each scored prediction's stamp (ns) and the prediction that
            is scored (anchored, when anchoring; a relative model's own output when it is
            aligned to the ground truth), in prediction-stamp order.

    Raises:
        BagError: unreadable bag, missing topic, wrong type or encoding.
        ValueError: inconsistent settings.
    """
    from moa_depth_ros.progress import progress_bar

    settings.check()
    with BagReader(bag) as reader:
        reader.require_topic(settings.image_topic, (IMAGE, COMPRESSED))
        reader.require_topic(settings.gt_topic, (IMAGE,))
        if settings.pred_topic is not None:
            reader.require_topic(settings.pred_topic, (IMAGE,))
        if settings.camera_info_topic is not None:
            reader.require_topic(settings.camera_info_topic, (CAMERA_INFO,))
        if settings.anchor_topic is not None:
            reader.require_topic(settings.anchor_topic, (IMAGE,))
        predictor = predict if isinstance(predict, Predictor) or predict is None else None
        if predict is not None and predictor is None:
            predictor = Predictor(predict)
        if predictor is None and settings.checkpoint is not None:
            predictor = estimator_predictor(settings)
        plan = _plan(settings, predictor if settings.pred_topic is None else None)

        # camera_info stamps are never paired: only its first message is read, for the report.
        topics = [settings.image_topic, settings.gt_topic]
        topics += [t for t in (settings.pred_topic, settings.anchor_topic) if t]
        topics = list(dict.fromkeys(topics))
        stamps = _read_stamps(reader, topics)
        pred_stamps = stamps[settings.pred_topic or settings.image_topic]
        gt_stamps = stamps[settings.gt_topic]
        slop_ns = round(settings.slop * 1e9)
        pairs = [
            _Pair(i, j, pred_stamps[i], gt_stamps[j])
            for i, j in pair_by_stamp(pred_stamps, gt_stamps, slop_ns)
        ]
        pairs.sort(key=lambda p: p.gt_stamp)
        for position in evenly_spaced(len(pairs), settings.samples):
            pairs[position].sample = True
        if settings.anchor_topic is not None:  # the anchor goes with the prediction's stamp
            anchor_stamps = stamps[settings.anchor_topic]
            for k, i in pair_by_stamp([p.pred_stamp for p in pairs], anchor_stamps, slop_ns):
                pairs[k].anchor_index = i
        rgb_for_sample: dict[int, _Pair] = {}
        if settings.pred_topic is not None:  # pictures need the image taken with each sample
            sampled = [p for p in pairs if p.sample]
            image_stamps = stamps[settings.image_topic]
            for k, i in pair_by_stamp([p.pred_stamp for p in sampled], image_stamps, slop_ns):
                rgb_for_sample[i] = sampled[k]

        evaluator = _Evaluator(reader, settings, predictor, plan, on_prediction)
        total = sum(len(stamps[t]) for t in topics)
        with progress_bar(total=total, desc="eval", unit="msg", disable=not progress) as bar:
            evaluator.run(pairs, rgb_for_sample, bar)
        camera = _first_camera_info(reader, settings.camera_info_topic)

    evaluation = evaluator.evaluation
    counts = {
        "predictions": len(pred_stamps),  # the images, when predicting from a checkpoint
        "ground_truth": len(gt_stamps),
        "matched": len(pairs),
        "unmatched_predictions": len(pred_stamps) - len(pairs),
        "unmatched_ground_truth": len(gt_stamps) - len(pairs),
        "without_valid_pixels": evaluation.without_valid_pixels,
        "undecodable": evaluator.undecodable,
        "evaluated": evaluation.evaluated,
    }
    anchoring, prompting = evaluator.anchoring, evaluator.prompting
    if anchoring is not None:
        counts.update(anchoring.counts)
        if plan.fit_space == "inverse_depth":
            counts["unpublished_no_fit"] = evaluator.unpublished
    if prompting is not None:
        counts.update(prompting.counts)
    unused = ("protocol", "align", "min_depth", "max_depth")
    if settings.anchor_topic is None:
        unused += tuple(f.name for f in fields(settings) if f.name.startswith("anchor_"))
    elif plan.prompt:
        unused += FIT_SETTINGS
    recorded = {k: v for k, v in asdict(settings).items() if v is not None and k not in unused}
    recorded.update(plan.notes)
    if camera:
        recorded["camera"] = camera
    report, samples, masks = evaluation.report(str(bag), counts, recorded, "Bag evaluation")
    if anchoring is not None or prompting is not None:
        report.sections["anchoring"] = (anchoring or prompting).summary()
    return EvalResult(report, samples, masks)


def _first_camera_info(reader: BagReader, topic: str | None) -> str | None:
    """A one-line description of the first camera_info on ``topic`` (for the report)."""
    if topic is None:
        return None
    from moa_depth_ros.msgs.camera_info import intrinsics_from_camera_info_msg

    for message in reader.messages([topic]):
        try:
            k = intrinsics_from_camera_info_msg(reader.decode(message))
        except ValueError as exc:
            return f"invalid camera_info ({exc})"
        return f"{k.width}x{k.height} fx={k.fx:.2f} fy={k.fy:.2f} cx={k.cx:.2f} cy={k.cy:.2f}"
    return None


def estimator_predictor(settings: EvalSettings) -> Predictor:
    """``settings.checkpoint`` through the node's estimator, metric output clamped to the
    protocol's depth range, as ``moa-depth-evaluate`` runs it (the protocol's input crop is
    applied around this by the evaluator), each forward timed by the estimator."""
    from moa_depth_ros.inference.load import load_estimator
    from moa_depth_ros.inference.options import InferenceOptions

    estimator = load_estimator(
        InferenceOptions(
            checkpoint=settings.checkpoint, device=settings.device, precision=settings.precision
        )
    )
    scoring = settings.scoring_protocol()
    depth_range = (scoring.min_depth, scoring.max_depth)
    seconds: list[float] = []

    def predict(rgb: np.ndarray, prompt: np.ndarray | None = None) -> np.ndarray:
        result = estimator.predict(rgb, depth_range, prompt_depth=prompt)
        seconds.append(result.timings["total"])
        return result.depth

    return Predictor(
        predict,
        estimator.output_kind,
        estimator.takes_depth_prompt,
        seconds,
        Path(str(settings.checkpoint)).name,
    )
