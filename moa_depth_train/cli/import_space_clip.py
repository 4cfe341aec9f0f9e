"""Convert a checkpoint trained with the SPACE-CLIP reference code into a node checkpoint.

moa-depth-import-space-clip --reference best_checkpoint.pt --out space_clip.safetensors

See moa_depth_train.import_space_clip. Errors are one line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moa_depth_ros.errors import run_command
from moa_depth_train.import_space_clip import convert

__all__ = ["main"]

PROG = "moa-depth-import-space-clip"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--clip-pretrained",
        default="openai",
        help="backbone weights when the reference file has none (tag or local file)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override, e.g. aux_heads=false")  # fmt: skip
    return parser


def _import(args: argparse.Namespace) -> int:
    counts = convert(args.reference, args.out, args.clip_pretrained, args.set)
    print(
        f"wrote {args.out}: {counts['decoder']} decoder and {counts['backbone']} backbone tensors "
        f"from {args.reference}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(PROG, lambda: _import(args), (ValueError, RuntimeError, OSError))


if __name__ == "__main__":
    sys.exit(main())
