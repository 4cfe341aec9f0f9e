"""Evaluate a checkpoint on NYU (or any dataset training.datasets reads).

python -m training.evaluate --checkpoint C --data D [--protocol eigen|depthclip|none]
                            [--align none|median|scale_shift] [--out DIR]

Predictions come from the product's own DepthEstimator (the node's code path) at the ground
truth's resolution; metrics are computed per image and averaged (BTS style).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from moa_depth_ros.checkpoint import CheckpointError, load_checkpoint
from moa_depth_ros.estimator import DepthEstimator
from moa_depth_ros.metrics import (
    ALIGN_MODES,
    DEPTHCLIP_CROP,
    EIGEN_CROP,
    MetricAverager,
    align_prediction,
    compute_depth_metrics,
    format_markdown_table,
    valid_mask,
)
from moa_depth_ros.models import DepthModel
from training.datasets import make_dataset

PROTOCOL_CROPS = {"eigen": EIGEN_CROP, "depthclip": DEPTHCLIP_CROP, "none": None}


def crop_for(protocol: str, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The protocol's crop; the NYU crops only apply to 480×640 ground truth."""
    if protocol not in PROTOCOL_CROPS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOL_CROPS)}, got {protocol!r}")
    return PROTOCOL_CROPS[protocol] if tuple(shape) == (480, 640) else None


def evaluate_model(
    model: DepthModel,
    dataset,
    device: str = "cpu",
    protocol: str = "eigen",
    align: str = "none",
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    max_samples: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Per-image metrics averaged over the dataset; the model is left in eval mode."""
    estimator = DepthEstimator(model, device=device, warmup=False)
    averager = MetricAverager()
    count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    for index in tqdm(range(count), desc="evaluate", disable=not progress, leave=False):
        sample = dataset[index]
        rgb = sample["image"].permute(1, 2, 0).numpy()
        gt = sample["depth"][0].numpy()
        pred = estimator.predict(rgb).depth
        crop = crop_for(protocol, gt.shape)
        if align != "none":
            valid = valid_mask(gt, pred, min_depth, max_depth, crop)
            pred = align_prediction(pred, gt, align, valid)
        averager.update(compute_depth_metrics(pred, gt, min_depth, max_depth, crop))
    return averager.compute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="official_splits/test dir, .mat, or list")
    parser.add_argument("--data-root", default=None, help="root for list-file paths")
    parser.add_argument("--split", default="test")
    parser.add_argument("--protocol", default="eigen", choices=sorted(PROTOCOL_CROPS))
    parser.add_argument("--align", default="none", choices=ALIGN_MODES)
    parser.add_argument("--min-depth", type=float, default=1e-3)
    parser.add_argument("--max-depth", type=float, default=10.0)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="directory for metrics.json and metrics.md")
    args = parser.parse_args(argv)
    try:
        model, metadata = load_checkpoint(args.checkpoint)
        dataset = make_dataset(args.data, split=args.split, data_root=args.data_root)
        metrics = evaluate_model(
            model,
            dataset,
            args.device,
            args.protocol,
            args.align,
            args.min_depth,
            args.max_depth,
            args.max_samples,
        )
    except (CheckpointError, ValueError) as err:  # bad file, data root, device: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = Path(args.checkpoint).stem
    table = format_markdown_table({name: metrics})
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": str(args.checkpoint),
            "model_type": metadata["model_type"],
            "data": str(args.data),
            "protocol": args.protocol,
            "align": args.align,
            "depth_range": [args.min_depth, args.max_depth],
            "metrics": {k: (None if np.isnan(v) else v) for k, v in metrics.items()},
        }
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        (out / "metrics.md").write_text(
            f"# {name} on {args.data}\n\nprotocol `{args.protocol}`, align `{args.align}`\n\n"
            + table
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
