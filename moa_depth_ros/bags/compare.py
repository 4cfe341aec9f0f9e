"""Compare several models on one bag: the same frames scored the same way for each, with each
model's time per frame measured in the same run, in one report.

Each model is a checkpoint or an exported graph the node loads. The bag is evaluated once per
model with :func:`moa_depth_ros.bags.evaluate.evaluate_bag` and the same settings, so the
pairs, the protocol, the anchoring and the picture-grid frames are identical; only the
predictions differ. The estimator's own timing of every frame (preprocessing, network,
resize to the image; after its warm-up) gives the time per frame.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from moa_depth_ros.bags.evaluate import EvalResult, EvalSettings, evaluate_bag
from moa_depth_ros.evaluation.report import EvalReport, GridSample

__all__ = ["Comparison", "compare_bag", "model_labels"]


@dataclass
class Comparison:
    """The combined report (a row per model, then the constant baseline), each model's picture
    grid samples (the same frames for all), and each model's own evaluation."""

    report: EvalReport
    samples: dict[str, list[GridSample]]
    runs: dict[str, EvalResult]


def model_labels(checkpoints: Sequence[str | Path]) -> list[str]:
    """Short, unique labels: file names, with their folder where two names agree."""
    paths = [Path(c) for c in checkpoints]
    names = [p.name for p in paths]
    labels = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same model is given twice: {', '.join(map(str, checkpoints))}")
    return labels


def _estimator_predictor(settings: EvalSettings) -> tuple[Callable, list[float]]:
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

    def predict(rgb: np.ndarray) -> np.ndarray:
        result = estimator.predict(rgb, depth_range)
        seconds.append(result.timings["total"])
        return result.depth

    return predict, seconds


def compare_bag(
    bag: str | Path,
    settings: EvalSettings,
    checkpoints: Sequence[str | Path],
    progress: bool = True,
    predictor: Callable[[EvalSettings], tuple[Callable, list[float]]] | None = None,
) -> Comparison:
    """Evaluate every checkpoint on ``bag`` with ``settings`` (whose own ``checkpoint`` and
    ``pred_topic`` must be unset) and combine the results (module doc).

    ``predictor(settings) -> (predict, seconds)`` builds one model's RGB → depth function and
    the list it appends each frame's seconds to (default: the estimator and its timings).

    Raises:
        BagError, CheckpointError, ValueError: as :func:`evaluate_bag`, naming the model.
    """
    if not checkpoints:
        raise ValueError("give at least one checkpoint to compare")
    if settings.checkpoint is not None or settings.pred_topic is not None:
        raise ValueError("the models to compare are given as checkpoints, not in the settings")
    labels = model_labels(checkpoints)
    predictor = predictor or _estimator_predictor
    runs: dict[str, EvalResult] = {}
    times: dict[str, float] = {}
    for index, (label, checkpoint) in enumerate(zip(labels, checkpoints, strict=True)):
        # The constant baseline is the same for every model: scored once, with the first.
        model_settings = replace(
            settings,
            checkpoint=str(checkpoint),
            baseline_depth=settings.baseline_depth if index == 0 else None,
        )
        model_settings.check()
        predict, seconds = predictor(model_settings)
        runs[label] = evaluate_bag(bag, model_settings, predict, progress)
        times[label] = 1000 * statistics.mean(seconds) if seconds else math.nan
    return _combine(str(bag), runs, times)


def _combine(source: str, runs: dict[str, EvalResult], times: dict[str, float]) -> Comparison:
    first = next(iter(runs.values())).report
    rows: dict[str, dict[str, float]] = {}
    per_frame = []
    for label, run in runs.items():
        own, *references = run.report.rows.values()
        rows[label] = {**own, "ms_per_frame": times[label]}
        per_frame += [{"model": label, **row} for row in run.report.per_frame]
    for reference, values in list(first.rows.items())[1:]:  # the baseline
        rows[reference] = values
    counts = dict(first.counts)
    mismatched = [
        label for label, run in runs.items() if run.report.counts["matched"] != counts["matched"]
    ]
    if mismatched:  # cannot happen with one bag and one setting; a guard, not a feature
        raise RuntimeError(f"models {mismatched} were scored on other frames than the first")
    settings = {k: v for k, v in first.settings.items() if k != "checkpoint"}
    settings["models"] = {
        label: run.report.settings.get("checkpoint") for label, run in runs.items()
    }
    report = EvalReport(source, rows, per_frame, counts, settings, "Model comparison on a bag")
    report.sections["time_per_frame_ms"] = {label: times[label] for label in runs}
    for name in first.sections:  # e.g. anchoring: each model's own fit
        report.sections[name] = {
            f"{label}: {key}": value
            for label, run in runs.items()
            for key, value in run.report.sections.get(name, {}).items()
        }
    samples = {label: run.samples for label, run in runs.items()}
    return Comparison(report, samples, runs)
