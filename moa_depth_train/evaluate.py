"""Score a depth estimator on a dataset (NYU, KITTI, bags: anything ``moa_depth_train`` reads).

Predictions come from the product's own DepthEstimator (the node's code path) at the ground
truth's resolution; every frame is scored by the shared evaluation core
(``moa_depth_ros.evaluation.scoring``) and the report is the one ``moa-depth-bag eval`` writes:
report.json, report.md, per_frame_metrics.png and samples.png. The command is
``moa-depth-evaluate`` (``moa_depth_train.cli.evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moa_depth_ros.evaluation.report import EvalReport, GridSample, write_report
from moa_depth_ros.evaluation.scoring import (
    Evaluation,
    alignment_for,
    evenly_spaced,
    get_protocol,
)
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.progress import progress_bar

__all__ = ["GRID_SAMPLES", "evaluate_estimator", "write_dataset_report"]

#: Frames kept for the report's picture grid.
GRID_SAMPLES = 4


def evaluate_estimator(
    estimator: DepthEstimator,
    dataset: Any,
    protocol: str = "eigen",
    align: str = "none",
    min_depth: float | None = None,
    max_depth: float | None = None,
    max_samples: int | None = None,
    samples: int = GRID_SAMPLES,
    progress: bool = True,
    source: str = "",
) -> tuple[EvalReport, list[GridSample], list]:
    """Score every sample (per-image metrics, averaged); the report and its grid samples.

    A relative model (``estimator.output_kind``) is scored aligned in inverse depth (what it
    gets when ``align`` is none; a depth-space alignment is refused); a prompt model needs
    sparse metric depth that datasets do not carry: refused (evaluate it on a bag with
    ``moa-depth-bag eval --anchor-topic``)."""
    if estimator.takes_depth_prompt:
        raise ValueError(
            f"{estimator.model_type} takes a metric depth prompt, which a dataset does not have: "
            "evaluate it on a bag with moa-depth-bag eval --anchor-topic"
        )
    kind = estimator.output_kind
    align, align_note = alignment_for(kind, align)
    scoring = get_protocol(protocol).with_range(min_depth, max_depth)
    evaluation = Evaluation(scoring, align, kind=kind)
    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    keep = evenly_spaced(count, samples)
    depth_range = scoring.scored_range

    def predict(image):
        return estimator.predict(image, depth_range).depth

    for index in progress_bar(range(count), desc="evaluate", disable=not progress, leave=False):
        sample = dataset[index]
        rgb = sample["image"].permute(1, 2, 0).numpy()
        gt = sample["depth"][0].numpy()
        pred = scoring.predict(predict, rgb)
        evaluation.add(
            pred,
            gt,
            {"path": sample["path"]},
            sample_label=Path(sample["path"]).name if index in keep else None,
            rgb=rgb if index in keep else None,
        )
    counts = {
        "samples": len(dataset),
        "evaluated": evaluation.evaluated,
        "without_valid_pixels": evaluation.without_valid_pixels,
    }
    skipped = len(getattr(dataset, "skipped", []))
    if skipped:
        counts["unreadable"] = skipped
    return evaluation.report(source, counts, {"align": align_note}, "Dataset evaluation")


def write_dataset_report(
    report: EvalReport, out: Path, samples: list[GridSample], masks: list
) -> dict[str, Path]:
    """The report's files in ``out``, pictures coloured over the protocol's depth range."""
    protocol = report.settings["protocol"]
    return write_report(report, out, samples, masks, protocol["min_depth"], protocol["max_depth"])
