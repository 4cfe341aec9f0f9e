"""Evaluate a checkpoint on NYU (or any dataset moa_depth_train.datasets reads).

moa-depth-evaluate --checkpoint C --data D [--protocol eigen|depthclip|none]
                   [--align none|median|scale_shift|scale_shift_inverse] --out DIR

Predictions come from the node's DepthEstimator; the report is the one ``moa-depth-bag eval``
writes (moa_depth_train.evaluate). Errors are one line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moa_depth_ros.errors import run_command
from moa_depth_ros.evaluation.metrics import ALIGN_MODES, format_markdown_table
from moa_depth_ros.evaluation.scoring import PROTOCOLS
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.models.checkpoint import CheckpointError
from moa_depth_ros.options import PRECISIONS
from moa_depth_train.datasets import make_dataset
from moa_depth_train.directories import setting_error
from moa_depth_train.evaluate import GRID_SAMPLES, evaluate_estimator, write_dataset_report

__all__ = ["main"]

PROG = "moa-depth-evaluate"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
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
    return parser


def _evaluate(args: argparse.Namespace) -> int:
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
        estimator, dataset, args.protocol, args.align, args.min_depth, args.max_depth,
        args.max_samples, args.samples, progress=not args.no_progress, source=str(args.data),
    )  # fmt: skip
    report.settings.update(
        checkpoint=str(args.checkpoint) or f"zero-shot DepthCLIP ({args.clip_pretrained})",
        model_type=estimator.model_type,
        precision=args.precision,
        flip_tta=args.flip_tta,
    )
    try:
        written = write_dataset_report(report, args.out, samples, masks)
    except OSError as err:
        raise setting_error("--out", args.out, err) from err
    label = Path(args.checkpoint).stem if args.checkpoint else "depthclip (zero-shot)"
    print(format_markdown_table({label: next(iter(report.rows.values()))}))
    print(f"report: {written['markdown']} (+ {', '.join(p.name for p in written.values())})")
    failure = report.failure()
    if failure:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A bad checkpoint, dataset or device: one line.
    errors = (CheckpointError, ValueError, RuntimeError, OSError)
    return run_command(PROG, lambda: _evaluate(args), errors)


if __name__ == "__main__":
    sys.exit(main())
