"""What a bag evaluation is asked to do (:class:`EvalSettings`), and the checks that refuse
settings no recording can be scored with, each naming the setting (``moa-depth-bag eval``
spells it ``--name-with-dashes``). The CLI's choices and defaults come from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from moa_depth_ros.anchoring import (
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_MAX_SCALE_CHANGE,
    DEFAULT_MAX_SCALE_FACTOR,
    DEFAULT_MIN_POINTS,
    DEFAULT_SMOOTHING,
    PREFIXED_SETTINGS,
    AnchorSettings,
    check_anchor_fraction,
)
from moa_depth_ros.evaluation.metrics import ALIGN_MODES
from moa_depth_ros.evaluation.scoring import RESIZE_MODES, Protocol, get_protocol

__all__ = ["FIT_SETTINGS", "MAX_SLOP", "SEED_RANGE", "EvalSettings"]

#: Largest stamp difference (s) that pairs two messages: the slop must stay under half a frame
#: period or neighbours pair up, and 1 s is half the period of a 0.5 Hz stream.
MAX_SLOP = 1.0
#: Seeds numpy's generator takes (the --anchor-fraction subset).
SEED_RANGE = (0, 2**32 - 1)


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
            asdict(self),
            space=space,
            min_depth=protocol.scored_min_depth,
            max_depth=protocol.scored_max_depth,
        )

    def check(self) -> None:
        """ValueError, naming the setting, for anything that cannot be evaluated (what depends
        on the model is checked once the model is known: ``eval_plan.plan_scoring``)."""
        if (self.checkpoint is None) == (self.pred_topic is None):
            raise ValueError("give exactly one of a checkpoint and a prediction topic")
        if self.gt_topic in (self.pred_topic, self.image_topic):
            raise ValueError(f"the ground-truth topic '{self.gt_topic}' is also an input topic")
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got '{self.align}'")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {tuple(RESIZE_MODES)}, got '{self.resize}'")
        protocol = self.scoring_protocol()  # checks the protocol name and the depth range
        if not 0 <= self.slop <= MAX_SLOP:  # NaN and inf fail too
            raise ValueError(
                f"slop must be in [0, {MAX_SLOP:g}] s (under half a frame period), got {self.slop}"
            )
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        low, high = protocol.scored_range
        if self.baseline_depth is not None and not low <= self.baseline_depth <= high:
            raise ValueError(
                f"baseline_depth must be inside the scoring range [{low:g}, {high:g}] m, got "
                f"{self.baseline_depth}"
            )
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
            # model is known (plan_scoring). Every other setting is checked now.
            replace(self, anchor_fill="holes").anchor_settings()
        else:
            self.anchor_settings()
        check_anchor_fraction(self.anchor_fraction)
        seed, (low, high) = self.anchor_seed, SEED_RANGE
        if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
            raise ValueError(f"anchor_seed must be an integer in [{low}, 2**32 - 1], got {seed}")

    @property
    def anchor_source(self) -> str:
        """The anchor topic as a report says it: its name and the share of it used."""
        fraction = self.anchor_fraction
        used = "" if fraction is None else f" ({100 * fraction:g} % of its pixels)"
        return f"{self.anchor_topic}{used}"


#: The settings only a fit uses (not a prompt model, which takes the anchor as its input; its
#: anchor_fill applies, as in the node).
FIT_SETTINGS = tuple(f"anchor_{name}" for name in PREFIXED_SETTINGS if name != "fill")
