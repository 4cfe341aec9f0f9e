"""Evaluate depth predictions against ground truth stored in a bag (offline, no ROS graph).

Predictions either come from running a checkpoint on the bag's images, or are read from a
topic recorded in the bag (a node's ``depth/image``, 32FC1 or 16UC1). Predictions and ground
truth are paired one-to-one by ``header.stamp`` within ``slop`` (``bags.pairing``); each pair
is scored by the shared evaluation core (``moa_depth_ros.evaluation.scoring``) under a named
protocol, per frame and as the per-frame mean, exactly as ``moa-depth-evaluate`` scores a dataset.

Two passes over the bag keep memory flat on long recordings: the first reads only stamps and
decides the pairs, the second decodes, predicts and scores each pair as soon as both of its
halves have been read, then drops them (only the few frames for the picture grid are kept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moa_depth_ros.bags.io import BagError, BagReader
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
    compressed_msg_to_rgb,
    image_msg_to_array,
    image_msg_to_rgb,
)
from moa_depth_ros.msgs.stamps import header_stamp_ns

__all__ = ["EvalResult", "EvalSettings", "evaluate_bag"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


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

    def scoring_protocol(self) -> Protocol:
        return get_protocol(self.protocol).with_range(self.min_depth, self.max_depth)

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
    pred: np.ndarray | None = None
    gt: np.ndarray | None = None
    rgb: np.ndarray | None = None


def _decode_depth(reader: BagReader, message: Any, topic: str) -> np.ndarray:
    msg = reader.decode(message)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise BagError(
            f"topic '{topic}' in bag '{reader.path}' has encoding '{msg.encoding}'; depth must "
            f"be one of {', '.join(sorted(DEPTH_ENCODINGS))} (REP 118)"
        )
    return image_msg_to_array(msg)


def _decode_rgb(reader: BagReader, message: Any) -> np.ndarray:
    msg = reader.decode(message)
    if message.msgtype == COMPRESSED:
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg)


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
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.predict = predict
        self.scoring = settings.scoring_protocol()
        self.evaluation = Evaluation(
            self.scoring,
            settings.align,
            settings.resize,
            settings.allow_aspect_change,
            baseline_depth=settings.baseline_depth,
        )
        self.undecodable = 0
        # Grid samples still waiting for their image (recorded prediction topic).
        self.samples: dict[int, GridSample] = {}

    def finish_pair(self, pair: _Pair) -> None:
        assert pair.pred is not None and pair.gt is not None
        info = {
            "pred_stamp_ns": pair.pred_stamp,
            "gt_stamp_ns": pair.gt_stamp,
            "stamp_diff_ms": (pair.pred_stamp - pair.gt_stamp) / 1e6,
        }
        label = f"stamp {pair.gt_stamp / 1e9:.3f} s" if pair.sample else None
        _, sample = self.evaluation.add(
            pair.pred, pair.gt, info, order=pair.gt_stamp, sample_label=label, rgb=pair.rgb
        )
        if sample is not None and sample.rgb is None:
            self.samples[id(pair)] = sample
        pair.pred = pair.gt = pair.rgb = None  # free the pixels

    def run(self, pairs: list[_Pair], rgb_for_sample: dict[int, _Pair], progress: Any) -> None:
        settings = self.settings
        by_pred = {p.pred_index: p for p in pairs}
        by_gt = {p.gt_index: p for p in pairs}
        from_images = settings.pred_topic is None
        topics = [settings.image_topic, settings.gt_topic]
        if not from_images:
            topics.append(settings.pred_topic)
        for message in self.reader.messages(topics):
            progress.update()
            pair = None
            try:
                if message.topic == settings.gt_topic and message.index in by_gt:
                    pair = by_gt.pop(message.index)
                    pair.gt = _decode_depth(self.reader, message, message.topic)
                elif message.topic == settings.image_topic and from_images:
                    if message.index in by_pred:
                        pair = by_pred.pop(message.index)
                        rgb = _decode_rgb(self.reader, message)
                        pair.pred = self.scoring.predict(self.predict, rgb)
                        pair.rgb = rgb if pair.sample else None
                elif message.topic == settings.image_topic:
                    if message.index in rgb_for_sample:
                        self._attach_rgb(rgb_for_sample.pop(message.index), message)
                elif message.topic == settings.pred_topic and message.index in by_pred:
                    pair = by_pred.pop(message.index)
                    pair.pred = _decode_depth(self.reader, message, message.topic)
            except ImageDecodeError:
                # One broken message costs one frame, not the evaluation; it is counted.
                self.undecodable += 1
                if pair is not None:
                    pair.pred = pair.gt = None
                    by_pred.pop(pair.pred_index, None)
                    by_gt.pop(pair.gt_index, None)
                continue
            if pair is not None and pair.pred is not None and pair.gt is not None:
                self.finish_pair(pair)

    def _attach_rgb(self, pair: _Pair, message: Any) -> None:
        """The image of a sampled pair: on its grid sample if scored already, else kept."""
        rgb = _decode_rgb(self.reader, message)
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
) -> EvalResult:
    """Evaluate one bag (see module doc).

    Args:
        predict: RGB H×W×3 uint8 → depth H×W float32 metres; built from
            ``settings.checkpoint`` when None and the settings ask for a checkpoint.

    Raises:
        BagError: unreadable bag, missing topic, wrong type or encoding.
        ValueError: inconsistent settings.
    """
    from tqdm import tqdm

    settings.check()
    with BagReader(bag) as reader:
        reader.require_topic(settings.image_topic, (IMAGE, COMPRESSED))
        reader.require_topic(settings.gt_topic, (IMAGE,))
        if settings.pred_topic is not None:
            reader.require_topic(settings.pred_topic, (IMAGE,))
        if settings.camera_info_topic is not None:
            reader.require_topic(settings.camera_info_topic, (CAMERA_INFO,))
        if predict is None and settings.checkpoint is not None:
            predict = _checkpoint_predictor(settings)

        # camera_info stamps are never paired: only its first message is read, for the report.
        topics = [settings.image_topic, settings.gt_topic]
        topics += [settings.pred_topic] if settings.pred_topic else []
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
        rgb_for_sample: dict[int, _Pair] = {}
        if settings.pred_topic is not None:  # pictures need the image taken with each sample
            sampled = [p for p in pairs if p.sample]
            image_stamps = stamps[settings.image_topic]
            for k, i in pair_by_stamp([p.pred_stamp for p in sampled], image_stamps, slop_ns):
                rgb_for_sample[i] = sampled[k]

        evaluator = _Evaluator(reader, settings, predict)
        total = sum(len(stamps[t]) for t in topics)
        with tqdm(total=total, desc="eval", unit="msg", disable=not progress) as bar:
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
    recorded = {
        k: v
        for k, v in asdict(settings).items()
        if v is not None and k not in ("protocol", "align", "min_depth", "max_depth")
    }
    if camera:
        recorded["camera"] = camera
    report, samples, masks = evaluation.report(str(bag), counts, recorded, "Bag evaluation")
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
