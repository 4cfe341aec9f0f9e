"""moa-depth-synthetic: write procedural indoor RGB-D frames with exact depth in the NYU sync
layout (``moa_depth_ros.synthetic``).

moa-depth-synthetic --out DIR --frames N --width W --height H --seed S
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from moa_depth_ros.errors import run_command
from moa_depth_ros.synthetic.dataset import write_synthetic_dataset
from moa_depth_ros.synthetic.scenes import FRAMES_PER_ROOM

PROG = "moa-depth-synthetic"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a procedural indoor RGB-D dataset in the NYU sync layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--frames", type=int, default=300, help="number of frames")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenes", type=int, default=None, help=f"rooms (default frames/{FRAMES_PER_ROOM})"
    )
    parser.add_argument("--test-fraction", type=float, default=0.2, help="rooms held out")
    parser.add_argument(
        "--camera-path",
        choices=["sequence", "random"],
        default="sequence",
        help="views per room: a moving camera (like NYU's video) or independent random poses",
    )
    args = parser.parse_args(argv)
    return run_command(PROG, lambda: _write(args), (ValueError, OSError))


def _write(args: argparse.Namespace) -> int:
    summary = write_synthetic_dataset(
        args.out,
        args.frames,
        args.width,
        args.height,
        args.seed,
        num_scenes=args.scenes,
        test_fraction=args.test_fraction,
        progress=True,
        camera_path=args.camera_path,
    )
    print(
        f"wrote {summary['train']} train + {summary['test']} test frames in "
        f"{summary['scenes']} rooms to {summary['root']} "
        f"({summary['train_list'].name}, {summary['test_list'].name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
