"""How one model's frames are made and scored under given settings (``bags.evaluate``'s module
doc): from what the model gives (:class:`ModelOutput`, known before the model runs) and the
settings. Refuses, naming the model, what cannot be scored honestly: a relative model with a
depth alignment or ``--anchor-mode none``, a prompt model without an anchor topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moa_depth_ros.bags.eval_settings import EvalSettings
from moa_depth_ros.evaluation.metrics import DEPTH_ALIGN_MODES, INVERSE_ALIGN
from moa_depth_ros.evaluation.scoring import alignment_for

__all__ = ["ModelOutput", "ScoringPlan", "plan_scoring"]


@dataclass(frozen=True)
class ModelOutput:
    """What a model gives, as scoring needs it: ``output_kind`` metric (metres) or relative
    (inverse depth up to scale and shift), and whether it takes a depth prompt. ``name`` says
    which model in errors."""

    name: str = "the model"
    output_kind: str = "metric"
    takes_depth_prompt: bool = False


@dataclass(frozen=True)
class ScoringPlan:
    """How one model's frames are made and scored (from the settings and the model)."""

    kind: str  # what the scored predictions hold: metric, or relative (a relative model unanchored)
    align: str  # what score_frame applies
    fit_space: str | None  # the anchoring's fit space; None: no fit
    prompt: bool  # the anchor topic is the model's depth prompt
    notes: dict[str, Any]  # what the report's settings say about it


def plan_scoring(settings: EvalSettings, model: ModelOutput | None) -> ScoringPlan:
    """How ``model`` (None: recorded predictions, metres) is scored under ``settings``
    (checked already); ValueError, naming the model, for what cannot be scored honestly."""
    name = model.name if model is not None else "the recorded prediction"
    kind = model.output_kind if model is not None else "metric"
    prompt = model is not None and model.takes_depth_prompt
    anchored = settings.anchor_topic is not None
    if prompt and not anchored:
        raise ValueError(
            f"{name} takes a depth prompt (metric depth registered to the image): give it with "
            "--anchor-topic (with --anchor-fraction to simulate a sparse sensor)"
        )
    notes: dict[str, Any] = {}
    if model is not None:
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
    if kind == "relative" and settings.align in DEPTH_ALIGN_MODES:
        raise ValueError(
            f"{name} gives relative inverse depth (unknown scale and shift): --align "
            f"{settings.align} aligns depth, not inverse depth; use --align {INVERSE_ALIGN} (what "
            "a relative model gets by default) or anchor it with --anchor-topic"
        )
    align, notes["align"] = alignment_for(kind, settings.align)
    notes["scored"] = _scored(settings, kind, align, fit_space, prompt, model)
    return ScoringPlan(kind, align, fit_space, prompt, notes)


def _scored(
    settings: EvalSettings,
    kind: str,
    align: str,
    fit_space: str | None,
    prompt: bool,
    model: ModelOutput | None,
) -> str:
    """One line: how a model's frames were scored (the report's settings, per model)."""
    if model is None:
        what = f"recorded predictions ({settings.pred_topic}), metres"
    elif model.output_kind == "relative":
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
