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

What the model gives decides how it is scored (``eval_plan.plan_scoring``, from the model's
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

Two passes over the bag keep memory flat on long recordings: the first (here) reads only stamps
and decides the pairs (and each pair's anchor), the second (``eval_pass``) decodes, predicts and
scores each pair as soon as all of its parts have been read, then drops them (only the few
frames for the picture grid are kept). Pairs are scored in prediction-stamp order, the order the
node sees its frames, because the anchor fit is smoothed over time.

The parts: ``eval_settings`` (what is asked, checked), ``eval_plan`` (how a model is scored),
``predictor`` (the model), ``eval_anchoring`` (the node's anchoring and prompting per frame),
``eval_pass`` (pass 2); this module runs them and writes the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from moa_depth_ros.bags.eval_pass import Pair, PairEvaluator
from moa_depth_ros.bags.eval_plan import plan_scoring
from moa_depth_ros.bags.eval_settings import FIT_SETTINGS, EvalSettings
from moa_depth_ros.bags.io import CAMERA_INFO, COMPRESSED, IMAGE, BagReader
from moa_depth_ros.bags.pairing import pair_by_stamp
from moa_depth_ros.bags.predictor import Predictor, estimator_predictor
from moa_depth_ros.evaluation.report import EvalReport, GridSample
from moa_depth_ros.evaluation.scoring import evenly_spaced
from moa_depth_ros.msgs.stamps import header_stamp_ns

# EvalSettings and Predictor are imported from here by the CLI and tests.
__all__ = [
    "EvalResult",
    "EvalSettings",
    "Predictor",
    "estimator_predictor",
    "evaluate_bag",
]


@dataclass
class EvalResult:
    report: EvalReport
    samples: list[GridSample] = field(default_factory=list)
    valid_masks: list[np.ndarray] = field(default_factory=list)


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
        model = predictor.output if predictor is not None and settings.pred_topic is None else None
        plan = plan_scoring(settings, model)

        # camera_info stamps are never paired: only its first message is read, for the report.
        topics = [settings.image_topic, settings.gt_topic]
        topics += [t for t in (settings.pred_topic, settings.anchor_topic) if t]
        topics = list(dict.fromkeys(topics))
        stamps = _read_stamps(reader, topics)
        pairs, rgb_for_sample = _pair_frames(settings, stamps)

        evaluator = PairEvaluator(reader, settings, predictor, plan, on_prediction)
        total = sum(len(stamps[t]) for t in topics)
        with progress_bar(total=total, desc="eval", unit="msg", disable=not progress) as bar:
            evaluator.run(pairs, rgb_for_sample, bar)
        camera = _first_camera_info(reader, settings.camera_info_topic)

    pred_stamps = stamps[settings.pred_topic or settings.image_topic]
    gt_stamps = stamps[settings.gt_topic]
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


def _pair_frames(
    settings: EvalSettings, stamps: dict[str, list[int]]
) -> tuple[list[Pair], dict[int, Pair]]:
    """Pass 1's decisions: the prediction/ground-truth pairs (sorted by ground-truth stamp,
    the sampled ones marked, each with its anchor message), and the sampled pairs by the image
    message their picture needs (recorded predictions only)."""
    pred_stamps = stamps[settings.pred_topic or settings.image_topic]
    gt_stamps = stamps[settings.gt_topic]
    slop_ns = round(settings.slop * 1e9)
    pairs = [
        Pair(i, j, pred_stamps[i], gt_stamps[j])
        for i, j in pair_by_stamp(pred_stamps, gt_stamps, slop_ns)
    ]
    pairs.sort(key=lambda p: p.gt_stamp)
    for position in evenly_spaced(len(pairs), settings.samples):
        pairs[position].sample = True
    if settings.anchor_topic is not None:  # the anchor goes with the prediction's stamp
        anchor_stamps = stamps[settings.anchor_topic]
        for k, i in pair_by_stamp([p.pred_stamp for p in pairs], anchor_stamps, slop_ns):
            pairs[k].anchor_index = i
    rgb_for_sample: dict[int, Pair] = {}
    if settings.pred_topic is not None:  # pictures need the image taken with each sample
        sampled = [p for p in pairs if p.sample]
        image_stamps = stamps[settings.image_topic]
        for k, i in pair_by_stamp([p.pred_stamp for p in sampled], image_stamps, slop_ns):
            rgb_for_sample[i] = sampled[k]
    return pairs, rgb_for_sample


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


def _read_stamps(reader: BagReader, topics: list[str]) -> dict[str, list[int]]:
    """Header stamps of every message on ``topics``, by topic, in bag order (pass 1)."""
    stamps: dict[str, list[int]] = {topic: [] for topic in topics}
    for message in reader.messages(topics):
        stamps[message.topic].append(header_stamp_ns(reader.decode(message)))
    return stamps
