"""Compare several models on one bag: the same frames scored the same way for each, with each
model's time per frame measured in the same run, in one report.

Each model is a checkpoint or an exported graph the node loads. Every model is planned before
any runs (what it gives is read from its file: ``predictor.model_output_of``), so an option one
of them cannot be scored with is refused before minutes of work on the others. The bag is then
evaluated once per model with :func:`moa_depth_ros.bags.evaluate.evaluate_bag` and the same
settings, so the pairs, the protocol, the anchoring and the picture-grid frames are identical;
only the predictions differ, and what each model needs to give metres: a relative model is
aligned per frame in inverse depth (or anchored in inverse depth with an anchor topic), a
prompt model takes the anchor topic as its prompt (bags.evaluate's module doc). The report has
a row per model (``models`` in report.json) and says per model how it was scored (section "how
each model was scored", and each model's own settings and counts where they differ). The
estimator's own timing of every forward (preprocessing, network, resize to the image; after
its warm-up) gives the time per frame: nothing of another model, the bag, the anchoring or the
scoring is in it.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moa_depth_ros.bags.eval_plan import ModelOutput, plan_scoring
from moa_depth_ros.bags.eval_settings import EvalSettings
from moa_depth_ros.bags.evaluate import EvalResult, evaluate_bag
from moa_depth_ros.bags.predictor import Predictor, estimator_predictor, model_output_of
from moa_depth_ros.evaluation.report import EvalReport, GridSample

__all__ = ["SCORED_SECTION", "Comparison", "compare_bag", "model_labels"]

#: The report section that says, per model, how its frames were scored.
SCORED_SECTION = "how_each_model_was_scored"
#: Settings that are the same for every model by construction, or said elsewhere.
_NOT_PER_MODEL = ("checkpoint", "baseline_depth")


@dataclass
class Comparison:
    """The combined report (a row per model, its ``models``, then the constant baseline, a
    reference), each model's picture grid samples (the same frames for all), and each model's
    own evaluation."""

    report: EvalReport
    samples: dict[str, list[GridSample]]
    runs: dict[str, EvalResult]


def model_labels(checkpoints: Sequence[str | Path]) -> list[str]:
    """Short, unique labels: each file's name, with as many of its folders as it takes to tell
    it from the others (``a/ckpt/best.safetensors``, ``b/ckpt/best.safetensors``).

    Raises:
        ValueError: one file given twice (by its resolved path: ``m.onnx`` and ``./m.onnx``).
    """
    seen: dict[Path, str | Path] = {}
    for checkpoint in checkpoints:
        resolved = Path(checkpoint).resolve()
        if resolved in seen:
            raise ValueError(
                f"the same model is given twice: {seen[resolved]} and {checkpoint} are both "
                f"{resolved}"
            )
        seen[resolved] = checkpoint
    # Labels from the paths as given (made absolute, not resolved: a link keeps its name).
    parts = [Path(os.path.abspath(c)).parts for c in checkpoints]
    depth = [1] * len(parts)
    while True:
        labels = [Path(*p[-d:]).as_posix() for p, d in zip(parts, depth, strict=True)]
        counts = Counter(labels)
        clashing = [i for i, label in enumerate(labels) if counts[label] > 1]
        if not clashing:
            return labels
        for i in clashing:  # distinct absolute paths: their full paths differ at the latest
            depth[i] += 1


def compare_bag(
    bag: str | Path,
    settings: EvalSettings,
    checkpoints: Sequence[str | Path],
    progress: bool = True,
    predictor: Callable[[EvalSettings], Predictor] | None = None,
    describe: Callable[[str], ModelOutput] | None = None,
) -> Comparison:
    """Evaluate every checkpoint on ``bag`` with ``settings`` (whose own ``checkpoint`` and
    ``pred_topic`` must be unset) and combine the results (module doc).

    Every model is planned first: ``describe(checkpoint) -> ModelOutput`` says what it gives
    (default: read from the file, :func:`model_output_of`), and a setting it cannot be scored
    with is refused before any model runs. ``predictor(settings) -> Predictor`` then builds one
    model (default: the estimator of ``settings.checkpoint``, timed per forward); models are
    built one at a time, each after the previous one's evaluation.

    Raises:
        BagError, CheckpointError, OnnxError, ValueError: as :func:`evaluate_bag`, naming the
            model.
    """
    if not checkpoints:
        raise ValueError("give at least one checkpoint to compare")
    if settings.checkpoint is not None or settings.pred_topic is not None:
        raise ValueError("the models to compare are given as checkpoints, not in the settings")
    labels = model_labels(checkpoints)
    load = predictor or estimator_predictor
    describe = describe or model_output_of
    planned: dict[str, EvalSettings] = {}
    for index, (label, checkpoint) in enumerate(zip(labels, checkpoints, strict=True)):
        # The constant baseline is the same for every model: scored once, with the first.
        model_settings = replace(
            settings,
            checkpoint=str(checkpoint),
            baseline_depth=settings.baseline_depth if index == 0 else None,
        )
        model_settings.check()
        plan_scoring(model_settings, replace(describe(str(checkpoint)), name=label))
        planned[label] = model_settings
    runs: dict[str, EvalResult] = {}
    times: dict[str, float] = {}
    for label, model_settings in planned.items():
        model = load(model_settings)
        runs[label] = evaluate_bag(bag, model_settings, model, progress)
        times[label] = 1000 * statistics.mean(model.seconds) if model.seconds else math.nan
        del model  # one model in memory at a time
    return _combine(str(bag), runs, times)


def _per_model(
    values: dict[str, dict[str, Any]], exclude: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split each model's ``values`` into those all models share (in the first model's order)
    and, per model, the rest."""
    first = next(iter(values.values()))
    shared = {
        key: value
        for key, value in first.items()
        if key not in exclude and all(key in own and own[key] == value for own in values.values())
    }
    own = {
        label: {k: v for k, v in model.items() if k not in shared and k not in exclude}
        for label, model in values.items()
    }
    return shared, own


def _combine(source: str, runs: dict[str, EvalResult], times: dict[str, float]) -> Comparison:
    first = next(iter(runs.values())).report
    rows: dict[str, dict[str, float]] = {}
    per_frame = []
    for label, run in runs.items():
        own = next(iter(run.report.rows.values()))  # the model's row; the rest are references
        rows[label] = {**own, "ms_per_frame": times[label]}
        per_frame += [{"model": label, **row} for row in run.report.per_frame]
    for reference, values in list(first.rows.items())[1:]:  # the baseline
        rows[reference] = values
    matched = {label: run.report.counts["matched"] for label, run in runs.items()}
    mismatched = [label for label, count in matched.items() if count != first.counts["matched"]]
    if mismatched:  # cannot happen with one bag and one setting; a guard, not a feature
        raise RuntimeError(f"models {mismatched} were scored on other frames than the first")
    # Counts every model shares (the bag's), then each model's own where they differ (frames
    # evaluated, not predicted for want of a prompt, not published before a first fit).
    counts, own_counts = _per_model({label: run.report.counts for label, run in runs.items()})
    for label, own in own_counts.items():
        counts.update({f"{label}: {key}": value for key, value in own.items()})
    settings, own_settings = _per_model(
        {label: run.report.settings for label, run in runs.items()}, _NOT_PER_MODEL
    )
    if "baseline_depth" in first.settings:
        settings["baseline_depth"] = first.settings["baseline_depth"]
    settings["models"] = {
        label: {"checkpoint": run.report.settings.get("checkpoint"), **own_settings[label]}
        for label, run in runs.items()
    }
    report = EvalReport(
        source, rows, per_frame, counts, settings, "Model comparison on a bag", models=tuple(runs)
    )
    report.sections[SCORED_SECTION] = {
        label: run.report.settings.get("scored", "") for label, run in runs.items()
    }
    report.sections["time_per_frame_ms"] = {label: times[label] for label in runs}
    names = dict.fromkeys(name for run in runs.values() for name in run.report.sections)
    for name in names:  # e.g. anchoring: each model's own fit (or prompt)
        report.sections[name] = {
            f"{label}: {key}": value
            for label, run in runs.items()
            for key, value in run.report.sections.get(name, {}).items()
        }
    samples = _same_frames({label: run.samples for label, run in runs.items()})
    return Comparison(report, samples, runs)


def _same_frames(samples: dict[str, list[GridSample]]) -> dict[str, list[GridSample]]:
    """Each model's grid samples of the frames every model has (a frame without valid pixels
    under a protocol that rejects a model's broken pixels has no sample for that model)."""
    common = set.intersection(*({s.label for s in own} for own in samples.values()))
    return {label: [s for s in own if s.label in common] for label, own in samples.items()}
