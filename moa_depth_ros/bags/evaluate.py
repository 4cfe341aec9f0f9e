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
from dataclasses import asdict, dataclass, field, fields
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
from moa_depth_ros.evaluation.metrics import ALIGN_MODES
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

__all__ = ["BAG_ANCHOR_OUTCOMES", "EvalResult", "EvalSettings", "evaluate_bag"]


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

    def anchor_settings(self) -> AnchorSettings:
        """The anchoring core's settings, as the node maps its parameters onto them; the
        published range is the scoring range (give the node's min/max depth to match it).

        Raises:
            ValueError: a setting (or combination) the core refuses, naming it.
        """
        protocol = self.scoring_protocol()
        return AnchorSettings(
            mode=self.anchor_mode,
            fill=self.anchor_fill,
            smoothing=self.anchor_smoothing,
            min_points=self.anchor_min_points,
            max_residual=self.anchor_max_residual,
            max_scale_factor=self.anchor_max_scale_factor,
            max_scale_change=self.anchor_max_scale_change,
            min_depth=protocol.min_depth,
            max_depth=protocol.max_depth,
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
        self.anchor_settings()
        check_anchor_fraction(self.anchor_fraction)


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
    anchor: np.ndarray | None = None
    anchor_read: bool = False  # its anchor message was read (anchor stays None if broken)
    dropped: bool = False  # a part could not be decoded: the pair is not scored

    @property
    def ready(self) -> bool:
        """Every part read (or the pair dropped): it can be scored and its pixels freed."""
        anchored = self.anchor_index is None or self.anchor_read
        return self.dropped or (self.pred is not None and self.gt is not None and anchored)

    def free(self) -> None:
        self.pred = self.gt = self.rgb = self.anchor = None


#: The outcomes a bag can give (the live-only ones need frame_ids, clocks and clouds), counted
#: in the report as the node's /diagnostics counts them: ``anchor_frames_<outcome>``.
BAG_ANCHOR_OUTCOMES = tuple(o for o in ANCHOR_OUTCOMES if o not in LIVE_OUTCOMES)


class _Anchoring:
    """The node's anchoring (the one ``AnchorTracker``), applied offline frame by frame, with
    what it did counted."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self.anchor_settings = settings.anchor_settings()
        self.tracker = AnchorTracker(self.anchor_settings)
        self.rng = np.random.default_rng(settings.anchor_seed)
        self.counts = {f"anchor_frames_{outcome}": 0 for outcome in BAG_ANCHOR_OUTCOMES}
        self.scales: list[float] = []  # each anchored frame's own fit
        self.shifts: list[float] = []
        self.points: list[int] = []  # anchors per fitted frame, used or not

    def apply(self, pred: np.ndarray, metric: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """``pred`` anchored with this frame's ``metric`` (None: none paired or unreadable), and
        the per-frame row entries. The metric must be registered to the prediction at its size,
        as the node needs it: the fit is made on the prediction as the model gave it, before
        it is resized to the ground truth for scoring. Another size is counted, not resized."""
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
        """The report's "anchoring" section: what the fits found, over the anchored frames."""
        return {
            "mode": self.settings.anchor_mode,
            "mean_scale": float(np.mean(self.scales)) if self.scales else math.nan,
            "mean_shift": float(np.mean(self.shifts)) if self.shifts else math.nan,
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
        predict: Callable[[np.ndarray], np.ndarray] | None,
        on_prediction: Callable[[int, np.ndarray], None] | None = None,
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.predict = predict
        self.on_prediction = on_prediction
        self.scoring = settings.scoring_protocol()
        self.evaluation = Evaluation(
            self.scoring,
            settings.align,
            settings.resize,
            settings.allow_aspect_change,
            baseline_depth=settings.baseline_depth,
        )
        self.anchoring = _Anchoring(settings) if settings.anchor_topic else None
        self.undecodable = 0
        # Pairs still waiting for a part, by role ("gt", "pred", "anchor", "rgb") and message.
        self.by_role: dict[str, dict[int, _Pair]] = {}
        # Grid samples still waiting for their image (recorded prediction topic).
        self.samples: dict[int, GridSample] = {}

    def finish_pair(self, pair: _Pair) -> None:
        assert pair.pred is not None and pair.gt is not None
        info: dict[str, Any] = {
            "pred_stamp_ns": pair.pred_stamp,
            "gt_stamp_ns": pair.gt_stamp,
            "stamp_diff_ms": (pair.pred_stamp - pair.gt_stamp) / 1e6,
        }
        pred = pair.pred
        if self.anchoring is not None:  # in metres, after the protocol's input crop
            pred, anchor_info = self.anchoring.apply(pred, pair.anchor)
            info.update(anchor_info)
        if self.on_prediction is not None:
            self.on_prediction(pair.pred_stamp, pred)
        label = f"stamp {pair.gt_stamp / 1e9:.3f} s" if pair.sample else None
        _, sample = self.evaluation.add(
            pred, pair.gt, info, order=pair.gt_stamp, sample_label=label, rgb=pair.rgb
        )
        if sample is not None and sample.rgb is None:
            self.samples[id(pair)] = sample
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
        else:
            pair.pred = self.scoring.predict(self.predict, data)
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
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
    on_prediction: Callable[[int, np.ndarray], None] | None = None,
) -> EvalResult:
    """Evaluate one bag (see module doc).

    Args:
        predict: RGB H×W×3 uint8 → depth H×W float32 metres; built from
            ``settings.checkpoint`` when None and the settings ask for a checkpoint.
        on_prediction: called with each scored prediction's stamp (ns) and the depth that is
            scored (anchored, when anchoring), in prediction-stamp order.

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
        if predict is None and settings.checkpoint is not None:
            predict = _checkpoint_predictor(settings)

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

        evaluator = _Evaluator(reader, settings, predict, on_prediction)
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
    anchoring = evaluator.anchoring
    if anchoring is not None:
        counts.update(anchoring.counts)
    recorded = {
        k: v
        for k, v in asdict(settings).items()
        if v is not None and k not in ("protocol", "align", "min_depth", "max_depth")
        and (anchoring is not None or not k.startswith("anchor_"))
    }  # fmt: skip
    if camera:
        recorded["camera"] = camera
    report, samples, masks = evaluation.report(str(bag), counts, recorded, "Bag evaluation")
    if anchoring is not None:
        report.sections["anchoring"] = anchoring.summary()
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


def _checkpoint_predictor(settings: EvalSettings) -> Callable[[np.ndarray], np.ndarray]:
    """The checkpoint clamped to the protocol's depth range, as ``moa-depth-evaluate`` runs it
    (the protocol's input crop is applied around this by the evaluator)."""
    from moa_depth_ros.inference.load import load_estimator
    from moa_depth_ros.inference.options import InferenceOptions

    estimator = load_estimator(
        InferenceOptions(
            checkpoint=settings.checkpoint, device=settings.device, precision=settings.precision
        )
    )
    scoring = settings.scoring_protocol()
    depth_range = (scoring.min_depth, scoring.max_depth)
    return lambda rgb: estimator.predict(rgb, depth_range).depth
