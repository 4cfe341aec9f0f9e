"""Pass 2 of a bag evaluation (``bags.evaluate``'s module doc): each message is read into the
pairs it belongs to (ground truth, prediction or image, anchor, the picture's image), and each
pair is predicted, anchored or prompted and scored as soon as all of its parts are read, in
prediction-stamp order, then its pixels are dropped."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from moa_depth_ros.anchoring import apply_anchor
from moa_depth_ros.bags.eval_anchoring import BagAnchoring, BagPrompting
from moa_depth_ros.bags.eval_plan import ScoringPlan
from moa_depth_ros.bags.eval_settings import EvalSettings
from moa_depth_ros.bags.io import BagError, BagReader
from moa_depth_ros.bags.predictor import Predictor
from moa_depth_ros.evaluation.report import GridSample
from moa_depth_ros.evaluation.scoring import Evaluation
from moa_depth_ros.msgs.image_codec import (
    DEPTH_ENCODINGS,
    ImageDecodeError,
    image_msg_to_array,
)

__all__ = ["Pair", "PairEvaluator"]


@dataclass
class Pair:
    """A prediction (or the image it is predicted from) and its ground truth, paired by stamp
    in pass 1 (indices among their topics' messages), and its parts once read in pass 2."""

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


def _decode_depth(reader: BagReader, message: Any, topic: str) -> np.ndarray:
    """A depth image message as H×W float32 metres; BagError for a non-depth encoding."""
    msg = reader.decode(message)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise BagError(
            f"topic '{topic}' in bag '{reader.path}' has encoding '{msg.encoding}'; depth must "
            f"be one of {', '.join(sorted(DEPTH_ENCODINGS))} (REP 118)"
        )
    return image_msg_to_array(msg)


class PairEvaluator:
    """Pass 2 under one scoring plan: :meth:`run` reads the bag once; ``evaluation`` then holds
    the scores, ``anchoring`` / ``prompting`` what they did, and the counters what was not
    scored (``unpublished``, ``undecodable``)."""

    def __init__(
        self,
        reader: BagReader,
        settings: EvalSettings,
        predictor: Predictor | None,
        plan: ScoringPlan,
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
        self.anchoring = BagAnchoring(settings, plan.fit_space) if plan.fit_space else None
        self.prompting = BagPrompting(settings) if plan.prompt else None
        self.unpublished = 0  # relative model, anchored: frames before the first good fit
        self.undecodable = 0
        # Pairs still waiting for a part, by role ("gt", "pred", "anchor", "rgb") and message.
        self.by_role: dict[str, dict[int, Pair]] = {}
        # Grid samples still waiting for their image (recorded prediction topic).
        self.samples: dict[int, GridSample] = {}

    def finish_pair(self, pair: Pair) -> None:
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
            if self.settings.anchor_fill == "holes":  # the sensor where it measured, as the node
                pair.pred = apply_anchor(
                    pair.pred, None, prompt, "holes", self.prompting.depth_range
                )
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
    def _label(pair: Pair) -> str | None:
        return f"stamp {pair.gt_stamp / 1e9:.3f} s" if pair.sample else None

    def _unpredicted(self, pair: Pair) -> None:
        """A pair the model gave nothing for: not scored; in the grid when sampled."""
        assert pair.gt is not None
        self.evaluation.add_unpredicted(pair.gt, pair.gt_stamp, self._label(pair), pair.rgb)
        pair.free()

    def run(self, pairs: list[Pair], rgb_for_sample: dict[int, Pair], progress: Any) -> None:
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

    def _roles(self, message: Any) -> list[tuple[str, Pair]]:
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

    def _store(self, role: str, pair: Pair, data: np.ndarray | None) -> None:
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

    def _attach_rgb(self, pair: Pair, rgb: np.ndarray) -> None:
        """The image of a sampled pair: on its grid sample if scored already, else kept."""
        sample = self.samples.pop(id(pair), None)
        if sample is not None:
            sample.rgb = rgb
        else:
            pair.rgb = rgb
