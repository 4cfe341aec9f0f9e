"""Write a self-contained checkpoint of a model built from pretrained weights (no training).

moa-depth-checkpoint --type depthblip2 --set pretrained=/models/instructblip-vicuna-7b \\
    --out depthblip2.safetensors
moa-depth-checkpoint --type depthclip --set clip_pretrained=/models/RN50.pt --out dc.safetensors

Zero-shot models (DepthCLIP, DepthBLIP-2) need no training: this writes their weights and
every text-derived buffer into one `.safetensors` file that the node, ``moa-depth-bag eval``
and ``moa-depth-evaluate`` load offline. Values of ``--set`` are YAML (numbers, lists, true).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from moa_depth_ros.errors import run_command
from moa_depth_ros.options import model_config_with

PROG = "moa-depth-checkpoint"


def main(argv: list[str] | None = None) -> int:
    from moa_depth_ros.models import MODEL_TYPES

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--type", required=True, choices=MODEL_TYPES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    return run_command(
        PROG, lambda: _write(args), (ValueError, RuntimeError, OSError, yaml.YAMLError)
    )


def _write(args: argparse.Namespace) -> int:
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    config = model_config_with({"type": args.type}, args.set)
    model = build_model(config)
    save_checkpoint(model.eval(), args.out, {"built_from": {"config": config}})
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({model.model_type}, {count:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
