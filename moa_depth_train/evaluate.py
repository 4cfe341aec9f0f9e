"""Evaluate a checkpoint on NYU (or any dataset moa_depth_train.datasets reads).

moa-depth-evaluate --checkpoint C --data D [--protocol eigen|depthclip|none]
                   [--align none|median|scale_shift] --out DIR

Predictions come from the product's own DepthEstimator (the node's code path) at the ground
truth's resolution; every frame is scored by the shared evaluation core
(``moa_depth_ros.evaluation.scoring``) and the report is the one ``moa-depth-bag eval`` writes:
report.json, report.md, per_frame_metrics.png and samples.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from moa_depth_ros.errors import one_line
from moa_depth_ros.evaluation.metrics import ALIGN_MODES, format_markdown_table
from moa_depth_ros.evaluation.report import EvalReport, GridSample, write_report
from moa_depth_ros.evaluation.scoring import PROTOCOLS, Evaluation, evenly_spaced, get_protocol
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.models.checkpoint import CheckpointError
from moa_depth_ros.options import PRECISIONS
from moa_depth_train.datasets import make_dataset

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
    """Score every sample (per-image metrics, averaged); the report and its grid samples."""
    scoring = get_protocol(protocol).with_range(min_depth, max_depth)
    evaluation = Evaluation(scoring, align)
    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    keep = evenly_spaced(count, samples)
    depth_range = (scoring.min_depth, scoring.max_depth)

    def predict(image):
        return estimator.predict(image, depth_range).depth

    for index in tqdm(range(count), desc="evaluate", disable=not progress, leave=False):
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
    return evaluation.report(source, counts, {}, "Dataset evaluation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moa-depth-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default="", help="a .safetensors checkpoint; none: zero-shot DepthCLIP"
    )
    parser.add_argument(
        "--clip-pretrained",
        default="openai",
        help="CLIP weights of zero-shot DepthCLIP (tag or local file)",
    )
    parser.add_argument("--data", required=True, help="official_splits/test dir, .mat, or list")
    parser.add_argument("--data-root", default=None, help="root for list-file paths")
    parser.add_argument("--split", default="test")
    parser.add_argument("--protocol", default="eigen", choices=tuple(PROTOCOLS))
    parser.add_argument("--align", default="none", choices=ALIGN_MODES)
    parser.add_argument("--min-depth", type=float, help="m (default: the protocol's)")
    parser.add_argument("--max-depth", type=float, help="m (default: the protocol's)")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--samples", type=int, default=GRID_SAMPLES, help="frames in the grid")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp16 on CUDA: what the DepthCLIP reference ran")  # fmt: skip
    parser.add_argument("--flip-tta", action="store_true",
                        help="mean with the mirrored prediction (SPACE-CLIP)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, type=Path, help="report directory")
    args = parser.parse_args(argv)
    try:
        estimator = load_estimator(
            InferenceOptions(
                checkpoint=args.checkpoint,
                clip_pretrained=args.clip_pretrained,
                device=args.device,
                precision=args.precision,
                warmup=False,
                flip_tta=args.flip_tta,
            )
        )
        dataset = make_dataset(args.data, split=args.split, data_root=args.data_root)
        report, samples, masks = evaluate_estimator(
            estimator,
            dataset,
            args.protocol,
            args.align,
            args.min_depth,
            args.max_depth,
            args.max_samples,
            args.samples,
            progress=not args.no_progress,
            source=str(args.data),
        )
    except (CheckpointError, ValueError, RuntimeError) as err:  # bad file, data, device
        print(f"moa-depth-evaluate: error: {one_line(err)}", file=sys.stderr)
        return 2
    report.settings.update(
        checkpoint=str(args.checkpoint) or f"zero-shot DepthCLIP ({args.clip_pretrained})",
        model_type=estimator.model_type,
        precision=args.precision,
        flip_tta=args.flip_tta,
    )
    protocol = report.settings["protocol"]
    written = write_report(
        report, args.out, samples, masks, protocol["min_depth"], protocol["max_depth"]
    )
    label = Path(args.checkpoint).stem if args.checkpoint else "depthclip (zero-shot)"
    print(format_markdown_table({label: next(iter(report.rows.values()))}))
    print(f"report: {written['markdown']} (+ {', '.join(p.name for p in written.values())})")
    failure = report.failure()
    if failure:
        print(f"moa-depth-evaluate: error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
