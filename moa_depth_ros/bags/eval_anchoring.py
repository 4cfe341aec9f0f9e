"""The node's metric anchoring and depth prompting applied to a bag's frames one at a time,
with what they did counted under the node's outcome names (``anchor_frames_<outcome>``):
:class:`BagAnchoring` for models that are fitted to the anchor, :class:`BagPrompting` for a
prompt model that takes it as its input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from moa_depth_ros.anchoring import (
    ANCHOR_OUTCOMES,
    LIVE_OUTCOMES,
    AnchorTracker,
    anchor_mask,
    depth_prompt,
    sparse_subset,
)
from moa_depth_ros.bags.eval_settings import EvalSettings

__all__ = ["BAG_ANCHOR_OUTCOMES", "PROMPT_OUTCOMES", "BagAnchoring", "BagPrompting"]


#: The outcomes a bag can give (the live-only ones need frame_ids, clocks and clouds), counted
#: in the report as the node's /diagnostics counts them: ``anchor_frames_<outcome>``.
BAG_ANCHOR_OUTCOMES = tuple(
    o for o in ANCHOR_OUTCOMES if o not in LIVE_OUTCOMES and o != "prompted"
)
#: What a prompt model's frames can come to in a bag (the node's names): the anchor was its
#: prompt, or the frame is not predicted for want of one.
PROMPT_OUTCOMES = ("prompted", "missing", "wrong_size", "too_few_points")


class BagAnchoring:
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
        frame = self.tracker.anchor(pred, metric)
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
        fit = self.tracker.current  # (none in mode none: it fits nothing)
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


class BagPrompting:
    """A prompt model's depth prompt per frame, as the node gives it
    (``node.anchors.CameraAnchoring.prompt_for``): the anchor at the image's size, pixels
    outside the depth range as holes; none (the frame is not predicted) when it is missing, of
    another size or without a valid pixel. The ``anchor_fraction`` subset is drawn as
    :class:`BagAnchoring` draws it (same seed, same frames, same order), so a prompt model and a
    fitted one see the same sparse anchors."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        protocol = settings.scoring_protocol()
        self.depth_range = protocol.scored_range
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
            prompt, points = depth_prompt(metric, self.depth_range)
            outcome = "prompted" if points else "too_few_points"
            if points:
                self.points.append(points)
        self.counts[f"anchor_frames_{outcome}"] += 1
        return prompt, {"anchor": outcome, "anchor_points": points}

    def summary(self) -> dict[str, Any]:
        """The report's "anchoring" section for a prompt model."""
        return {
            "mode": "depth_prompt",
            "median_points": float(np.median(self.points)) if self.points else math.nan,
        }
