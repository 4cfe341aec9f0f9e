"""Evaluation reports for people: report.json, report.md, a per-frame plot and a picture grid.

ROS-free (numpy, OpenCV, matplotlib with the Agg backend, so it runs headless). The numbers
come from ``metrics``; the depth colours from ``visualize`` (the node's colorized output uses
the same map, so pictures in reports and in RViz read the same).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from moa_depth_ros.evaluation.metrics import format_markdown_table
from moa_depth_ros.visualize import depth_colorbar, depth_panel, display_range, labelled_strip

__all__ = [
    "EvalReport",
    "GridSample",
    "error_map",
    "comparison_grid",
    "picture_grid",
    "plot_per_frame",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PNG = "per_frame_metrics.png"
GRID_PNG = "samples.png"
#: Metrics shown in the per-frame plot: one relative error, one absolute, one accuracy.
PLOT_METRICS = ("abs_rel", "rmse", "delta1")
#: Relative error at which the error map saturates (brightest colour).
ERROR_MAP_MAX = 0.5
_INVALID_GREY = 96
_TITLES = ("RGB", "ground truth", "prediction", "|pred - gt| / gt")
#: Height of the colour-bar row under the picture grid (depth in metres, relative error).
_LEGEND_HEIGHT = 34
_LEGEND_GAP = 8


@dataclass
class EvalReport:
    """What an evaluation found. ``rows`` maps a label to overall metrics; the first row is the
    evaluated prediction, further rows are references (e.g. a constant-depth baseline). A
    comparison names its models' rows in ``models``; the other rows are its references."""

    source: str
    rows: dict[str, dict[str, float]]
    per_frame: list[dict[str, Any]]
    counts: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    title: str = "Depth evaluation"
    #: Further findings by section name (e.g. "anchoring": fitted scale and shift), each a
    #: top-level key of report.json and a "## Name" list in report.md.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The rows that are models of a comparison (empty: one model, the first row).
    models: tuple[str, ...] = ()

    def failure(self) -> str | None:
        """Why nothing real was scored (no frame, or predictions all NaN / non-positive), or
        None: an evaluation must never report success on nothing."""
        if self.counts["evaluated"] == 0:
            return "no frame could be evaluated (no valid ground truth or no prediction)"
        if next(iter(self.rows.values())).get("pred_usable", 1.0) == 0.0:
            return (
                "no usable prediction: every scored pixel was NaN, infinite or not positive "
                "(a broken model or checkpoint)"
            )
        return None


@dataclass
class GridSample:
    """One row of the picture grid; ``rgb`` may be None (drawn grey) when no image matched."""

    label: str
    gt: np.ndarray
    pred: np.ndarray
    rgb: np.ndarray | None = None


def _json_safe(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def error_map(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Absolute relative error |pred − gt| / gt as an H×W×3 uint8 **RGB** picture.

    INFERNO from 0 (black) to :data:`ERROR_MAP_MAX` and above (yellow); pixels outside
    ``valid`` (no ground truth, no prediction) are grey so they do not read as "no error".
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(pred.astype(np.float32) - gt) / gt
    level = np.clip(np.nan_to_num(rel, nan=0.0, posinf=ERROR_MAP_MAX) / ERROR_MAP_MAX, 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(level * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    bgr[~valid] = _INVALID_GREY
    return np.ascontiguousarray(bgr[..., ::-1])


def _title_bar(titles: Sequence[str], tile_width: int, columns: int | None = None) -> np.ndarray:
    """White bar with one title per tile; the font follows the tile width."""
    scale = max(0.3, min(0.6, tile_width / 400))
    height = int(28 * scale / 0.6) + 6
    columns = columns or len(titles)
    bar = np.full((height, tile_width * columns, 3), 255, dtype=np.uint8)
    for index, title in enumerate(titles):
        origin = (index * tile_width + 4, height - 8)
        cv2.putText(bar, title, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def _rgb_at(sample: GridSample) -> np.ndarray:
    """The sample's image at its ground truth's size (grey when none was matched)."""
    height, width = sample.gt.shape
    if sample.rgb is None:
        return np.full((height, width, 3), _INVALID_GREY, dtype=np.uint8)
    if sample.rgb.shape[:2] != (height, width):
        return cv2.resize(sample.rgb, (width, height), interpolation=cv2.INTER_AREA)
    return sample.rgb


def _grid(
    titles: Sequence[str], rows: Sequence[tuple[str, np.ndarray]], legend: Sequence[np.ndarray]
) -> np.ndarray:
    """Titles, then per row a label bar and the row of tiles (scaled to the first row's
    width), then the legend strip: one picture."""
    columns = len(titles)
    width = rows[0][1].shape[1] // columns
    parts = [_title_bar(titles, width)]
    for label, row in rows:
        if row.shape[1] != columns * width:  # rows of different sizes: scale to the first
            row = cv2.resize(
                row, (columns * width, round(row.shape[0] * width * columns / row.shape[1]))
            )
        parts += [_title_bar([label], width, columns), row]
    legend_row = np.concatenate(legend, axis=1)
    gap = np.full((_LEGEND_GAP, legend_row.shape[1], 3), 255, dtype=np.uint8)  # bars apart
    parts += [gap, legend_row]
    return np.concatenate(parts, axis=0)


def _legend(width: int, depth_columns: int, min_depth: float, max_depth: float, error: bool):
    """Under the RGB column nothing; under the depth columns the colour bar in metres; under
    an error column its scale."""
    strips = [
        np.full((_LEGEND_HEIGHT, width, 3), 255, dtype=np.uint8),  # nothing under RGB
        _padded(
            depth_colorbar(
                min_depth, max_depth, max(1, depth_columns * width - 16), _LEGEND_HEIGHT
            ),
            depth_columns * width,
        ),
    ]
    if error:
        strips.append(_padded(error_colorbar(max(1, width - 16), _LEGEND_HEIGHT), width))
    return strips


def picture_grid(
    samples: Sequence[GridSample],
    min_depth: float,
    max_depth: float,
    valid_masks: Sequence[np.ndarray],
) -> np.ndarray:
    """Rows of RGB | ground truth | prediction | error map (RGB uint8), at ground-truth size.

    Depth uses ``visualize.colorize_depth`` (inverse-depth TURBO) over the ground truth's
    :func:`display_range`, the same for every row so rows compare.
    """
    if not samples:
        raise ValueError("picture_grid needs at least one sample")
    min_depth, max_depth = display_range([s.gt for s in samples], min_depth, max_depth)
    rows = []
    for sample, valid in zip(samples, valid_masks, strict=True):
        panel = depth_panel(_rgb_at(sample), [sample.gt, sample.pred], min_depth, max_depth)
        rows.append(
            (
                sample.label,
                np.concatenate([panel, error_map(sample.pred, sample.gt, valid)], axis=1),
            )
        )
    width = samples[0].gt.shape[1]
    return _grid(_TITLES, rows, _legend(width, 2, min_depth, max_depth, error=True))


def comparison_grid(
    predictions: Mapping[str, Sequence[GridSample]], min_depth: float, max_depth: float
) -> np.ndarray:
    """Rows of RGB | ground truth | one column per model (RGB uint8): the same frames, each
    model's prediction, one depth colour scale for all."""
    if not predictions or not next(iter(predictions.values())):
        raise ValueError("comparison_grid needs at least one model and one sample")
    models = list(predictions)
    first = predictions[models[0]]
    if any(len(predictions[m]) != len(first) for m in models):
        raise ValueError("comparison_grid needs the same frames for every model")
    min_depth, max_depth = display_range([s.gt for s in first], min_depth, max_depth)
    rows = []
    for index, sample in enumerate(first):
        preds = [predictions[model][index].pred for model in models]
        rows.append(
            (sample.label, depth_panel(_rgb_at(sample), [sample.gt, *preds], min_depth, max_depth))
        )
    width = first[0].gt.shape[1]
    titles = ["RGB", "ground truth", *models]
    return _grid(titles, rows, _legend(width, 1 + len(models), min_depth, max_depth, error=False))


def _padded(picture: np.ndarray, width: int) -> np.ndarray:
    """``picture`` centred on a white strip ``width`` px wide (legend bars keep apart)."""
    left = (width - picture.shape[1]) // 2
    out = np.full((picture.shape[0], width, 3), 255, dtype=np.uint8)
    out[:, left : left + picture.shape[1]] = picture
    return out


def error_colorbar(width: int, height: int) -> np.ndarray:
    """The error map's scale: INFERNO from AbsRel 0 to :data:`ERROR_MAP_MAX`, labelled."""
    levels = np.rint(np.linspace(0, 255, width)).astype(np.uint8)[None, :]
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO)[..., ::-1]
    labels = [(0, "0"), (width - 1, f">= {ERROR_MAP_MAX:g}")]
    return labelled_strip(colours, labels, height, marks=False)


def plot_per_frame(per_frame: Sequence[Mapping[str, Any]], path: Path) -> None:
    """abs_rel, rmse and delta1 against frame number, one panel each, mean dashed (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: robots and CI have no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    models = list(dict.fromkeys(row.get("model") for row in per_frame))  # [None]: one model
    fig, axes = plt.subplots(len(PLOT_METRICS), 1, figsize=(8, 6), sharex=True)
    try:
        for axis, name in zip(axes, PLOT_METRICS, strict=True):
            for model in models:
                rows = [row for row in per_frame if row.get("model") == model]
                values = [row[name] for row in rows]
                line = axis.plot([row["frame"] for row in rows], values, marker=".",
                                 linewidth=1, label=model)  # fmt: skip
                if values:
                    axis.axhline(float(np.mean(values)), color=line[0].get_color(),
                                 linestyle="--", linewidth=1)  # fmt: skip
            axis.set_ylabel(name)
            axis.grid(alpha=0.3)
        if models != [None]:
            axes[0].legend(fontsize="small")
        axes[-1].set_xlabel("frame (matched pairs, in stamp order)")
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle("per-frame metrics (dashed: mean)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _number(value: Any) -> str:
    """Four significant digits for floats (a fitted scale), as is for anything else."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def _markdown(report: EvalReport, pictures: Mapping[str, str]) -> str:
    counts = report.counts
    lines = [
        f"# {report.title}",
        "",
        f"Source: `{report.source}`",
        "",
        "| frames | count |",
        "|---|---:|",
        *(f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()),
        "",
        "## Metrics (mean of per-frame values)",
        "",
        format_markdown_table(report.rows).rstrip(),
        "",
    ]
    if "plot" in pictures:
        lines += ["## Per-frame metrics", "", f"![per-frame metrics]({pictures['plot']})", ""]
    if "grid" in pictures:
        columns = (
            "RGB | ground truth | one column per model."
            if report.models
            else "RGB | ground truth | prediction | absolute relative error (black 0, yellow "
            f">= {ERROR_MAP_MAX:g}, grey: not evaluated)."
        )
        lines += [
            "## Samples",
            "",
            f"{columns} Depth: near red, far blue, over the ground truth's 1st-99th "
            "percentile; the colour bars under the grid give metres (and relative error).",
            "",
            f"![samples]({pictures['grid']})",
            "",
        ]
    for name, values in report.sections.items():
        lines += [f"## {name.replace('_', ' ').capitalize()}", ""]
        lines += [f"- {key.replace('_', ' ')}: {_number(value)}" for key, value in values.items()]
        lines += [""]
    lines += ["## Settings", ""]
    lines += [f"- {key}: `{value}`" for key, value in report.settings.items()]
    return "\n".join(lines) + "\n"


def write_report(
    report: EvalReport,
    out_dir: str | Path,
    samples: Sequence[GridSample] = (),
    valid_masks: Sequence[np.ndarray] = (),
    min_depth: float = 0.1,
    max_depth: float = 10.0,
    compared: Mapping[str, Sequence[GridSample]] | None = None,
) -> dict[str, Path]:
    """Write report.json, report.md and (when there is data) the plot and grid PNGs. With
    ``compared`` (each model's samples of the same frames) the grid has a column per model.

    Returns the written paths by kind ("json", "markdown", "plot", "grid").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    pictures: dict[str, str] = {}
    if report.per_frame:
        plot_per_frame(report.per_frame, out / PLOT_PNG)
        written["plot"], pictures["plot"] = out / PLOT_PNG, PLOT_PNG
    if compared and next(iter(compared.values())):
        grid = comparison_grid(compared, min_depth, max_depth)
    elif samples:
        grid = picture_grid(samples, min_depth, max_depth, valid_masks)
    else:
        grid = None
    if grid is not None:
        if not cv2.imwrite(str(out / GRID_PNG), grid[..., ::-1]):
            raise OSError(f"cannot write {out / GRID_PNG}")
        written["grid"], pictures["grid"] = out / GRID_PNG, GRID_PNG
    # One model: "overall" is its row. A comparison: "models" holds a row per model (none is
    # "overall"). "references" are the rows that are no model (the constant baseline).
    labels = list(report.rows)
    models = list(report.models) or labels[:1]
    if report.models:
        scored: dict[str, Any] = {"models": {label: report.rows[label] for label in models}}
    else:
        scored = {"overall": report.rows[labels[0]] if labels else {}}
    payload = {
        "source": report.source,
        **scored,
        "references": {label: row for label, row in report.rows.items() if label not in models},
        "counts": report.counts,
        "settings": report.settings,
        **report.sections,
        "per_frame": report.per_frame,
    }
    (out / REPORT_JSON).write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    (out / REPORT_MD).write_text(_markdown(report, pictures))
    written["json"], written["markdown"] = out / REPORT_JSON, out / REPORT_MD
    return written
