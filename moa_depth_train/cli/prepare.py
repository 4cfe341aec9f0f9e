"""Fetch, check and extract the NYU data (moa_depth_train.prepare).

moa-depth-prepare download URL --out FILE [--sha256 HEX]     resumable, checksum-verified
moa-depth-prepare nyu-lists --out data/nyu                   the BTS train/test list files
moa-depth-prepare nyu-extract --mat nyu_depth_v2_labeled.mat --splits splits.mat \\
                              --out data/nyu/official_splits
moa-depth-prepare nyu-verify --root data/nyu/sync --list nyudepthv2_train_files_with_gt.txt

Errors are one line and exit 2; Ctrl-C exits 130 (an interrupted download resumes next time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moa_depth_ros.errors import run_command
from moa_depth_train.prepare import (
    PrepareError,
    download,
    extract_official_splits,
    fetch_lists,
    verify_tree,
)

__all__ = ["main"]

PROG = "moa-depth-prepare"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch one file (resumable, checksum-verified)")
    get.add_argument("url")
    get.add_argument("--out", required=True, type=Path)
    get.add_argument("--sha256")
    lists = commands.add_parser("nyu-lists", help="fetch the BTS NYU train/test list files")
    lists.add_argument("--out", required=True, type=Path)
    lists.add_argument("--base-url", help="a mirror holding the two list files")
    extract = commands.add_parser("nyu-extract", help="official_splits/ from the labeled .mat")
    extract.add_argument("--mat", required=True, type=Path)
    extract.add_argument("--splits", required=True, type=Path)
    extract.add_argument("--out", required=True, type=Path)
    verify = commands.add_parser("nyu-verify", help="check a sync tree against a list file")
    verify.add_argument("--root", required=True, type=Path)
    verify.add_argument("--list", required=True, type=Path)
    for sub in (get, lists, extract):
        sub.add_argument("--no-progress", action="store_true")
    return parser


def _prepare(args: argparse.Namespace) -> int:
    if args.command == "download":
        digest = download(args.url, args.out, args.sha256, not args.no_progress)
        print(f"{args.out}: sha256 {digest}" + ("" if args.sha256 else " (not verified)"))
    elif args.command == "nyu-lists":
        for path in fetch_lists(args.out, args.base_url, not args.no_progress):
            print(f"{path}: {len(path.read_text().splitlines())} lines")
    elif args.command == "nyu-extract":
        counts = extract_official_splits(args.mat, args.splits, args.out, not args.no_progress)
        print(f"wrote {counts['train']} train and {counts['test']} test frames to {args.out}")
    else:
        listed, missing = verify_tree(args.root, args.list)
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            print(
                f"{PROG}: error: {len(missing)} of the {2 * listed} files listed "
                f"in {args.list} are missing under {args.root}: {shown}",
                file=sys.stderr,
            )
            return 1
        print(f"{args.root}: all {listed} pairs of {args.list} present")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(PROG, lambda: _prepare(args), (PrepareError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
