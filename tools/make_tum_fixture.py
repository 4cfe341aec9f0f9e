"""Regenerate test/fixtures/tum_fr3_teddy/ from a TUM RGB-D download of fr3/teddy.

    python tools/make_tum_fixture.py DOWNLOAD_DIR [--out test/fixtures/tum_fr3_teddy]

DOWNLOAD_DIR is an extracted ``rgbd_dataset_freiburg3_teddy`` (``rgb.txt``, ``depth.txt``,
``groundtruth.txt``, ``rgb/``, ``depth/``) or a directory of the same frames with an
``associations.txt`` (``rgb_stamp rgb_file depth_stamp depth_file [pose_stamp tx ty tz qx qy
qz qw]`` per line). The colour frames named by ``--stamps`` (default: the fixture's eight) are
paired with the depth frame and motion-capture pose nearest in time, then reduced to
``--width``×``--height``:

- depth (uint16, metres = value / 5000, 0 = no measurement) by strided sampling
  ``depth[::s, ::s]``: every kept value is a real measurement and holes stay holes (an
  averaging resize would invent depths between foreground and background, and shrink holes);
- colour by area averaging (cv2.INTER_AREA);
- intrinsics scaled as image_proc's ResizeNode does (fx, cx by the width ratio; fy, cy by the
  height ratio), written to ``intrinsics.json``.

The README.md of the fixture (attribution, licence) is kept as it is.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: TUM fr3 colour camera, 640x480 (zero distortion: TUM's fr3 calibration).
FULL_INTRINSICS = {"fx": 535.4, "fy": 539.2, "cx": 320.1, "cy": 247.6, "width": 640, "height": 480}
#: Colour stamps of the fixture's frames: 8 spread evenly over the sequence's first 3.3 s.
DEFAULT_STAMPS = (
    "1341841873.405959",
    "1341841873.909846",
    "1341841874.245904",
    "1341841874.749925",
    "1341841875.249806",
    "1341841875.753931",
    "1341841876.085792",
    "1341841876.589893",
)
#: Largest colour / depth (and colour / pose) stamp difference accepted, as TUM's associate.py.
MAX_DIFFERENCE_S = 0.02
DEPTH_SCALE = 5000  # TUM depth PNG value per metre


class FixtureError(Exception):
    """A download directory or option that cannot make the fixture; one line."""


@dataclass
class Frame:
    rgb_stamp: str
    rgb_file: str
    depth_stamp: str
    depth_file: str
    pose: list[str]  # pose_stamp tx ty tz qx qy qz qw, or empty when the download has none


def _read_list(path: Path, columns: int) -> list[list[str]]:
    """Rows of a TUM text file (``#`` comments), each with at least ``columns`` fields."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < columns:
            raise FixtureError(f"{path}:{number}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def _nearest(stamp: str, rows: list[list[str]], what: str) -> list[str]:
    """The row whose stamp (first field) is nearest ``stamp``, within MAX_DIFFERENCE_S."""
    stamps = [float(r[0]) for r in rows]
    order = sorted(range(len(rows)), key=stamps.__getitem__)
    keys = [stamps[i] for i in order]
    t = float(stamp)
    at = bisect.bisect_left(keys, t)
    candidates = [order[i] for i in (at - 1, at) if 0 <= i < len(order)]
    if not candidates:
        raise FixtureError(f"no {what} stamps to pair colour frame {stamp} with")
    best = min(candidates, key=lambda i: abs(stamps[i] - t))
    if abs(stamps[best] - t) > MAX_DIFFERENCE_S:
        raise FixtureError(
            f"no {what} within {MAX_DIFFERENCE_S * 1e3:g} ms of colour frame {stamp} "
            f"(nearest {rows[best][0]})"
        )
    return rows[best]


def find_frames(source: Path, stamps: list[str]) -> list[Frame]:
    """The colour frames ``stamps`` of ``source`` with their depth frames and poses."""
    associations = source / "associations.txt"
    if associations.is_file():
        rows = {r[0]: r for r in _read_list(associations, 4)}
        frames = []
        for stamp in stamps:
            if stamp not in rows:
                raise FixtureError(f"colour frame {stamp} is not in {associations}")
            r = rows[stamp]
            frames.append(Frame(r[0], r[1], r[2], r[3], r[4:12] if len(r) >= 12 else []))
        return frames
    for name in ("rgb.txt", "depth.txt"):
        if not (source / name).is_file():
            raise FixtureError(f"{source} has neither associations.txt nor {name}")
    rgb = {r[0]: r for r in _read_list(source / "rgb.txt", 2)}
    depth = _read_list(source / "depth.txt", 2)
    truth_file = source / "groundtruth.txt"
    truth = _read_list(truth_file, 8) if truth_file.is_file() else []
    frames = []
    for stamp in stamps:
        if stamp not in rgb:
            raise FixtureError(f"colour frame {stamp} is not in {source / 'rgb.txt'}")
        d = _nearest(stamp, depth, "depth")
        pose = _nearest(stamp, truth, "ground-truth pose")[:8] if truth else []
        frames.append(Frame(stamp, rgb[stamp][1], d[0], d[1], pose))
    return frames


def reduce_frame(
    rgb_bgr: np.ndarray, depth: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(colour area-averaged to width×height, depth[::s, ::s]) of one 640x480 frame."""
    step = FULL_INTRINSICS["width"] // width
    colour = cv2.resize(rgb_bgr, (width, height), interpolation=cv2.INTER_AREA)
    return colour, np.ascontiguousarray(depth[::step, ::step])


def _read(path: Path, dtype: type, channels: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    shape = (FULL_INTRINSICS["height"], FULL_INTRINSICS["width"])
    expected = shape if channels == 1 else (*shape, channels)
    if image is None or image.dtype != dtype or image.shape != expected:
        got = "unreadable" if image is None else f"{image.dtype} {image.shape}"
        raise FixtureError(f"{path}: expected {np.dtype(dtype)} {expected}, got {got}")
    return image


def make_fixture(source: Path, out: Path, stamps: list[str], width: int, height: int) -> None:
    full_w, full_h = FULL_INTRINSICS["width"], FULL_INTRINSICS["height"]
    step = full_w // width
    if width < 1 or full_w % width or full_h % height or full_h // height != step:
        raise FixtureError(
            f"{width}x{height} is not {full_w}x{full_h} divided by a whole number "
            "(strided depth sampling needs one)"
        )
    frames = find_frames(source, stamps)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    lines = ["# rgb_stamp rgb_file depth_stamp depth_file [pose_stamp tx ty tz qx qy qz qw]"]
    for frame in frames:
        rgb = _read(source / frame.rgb_file, np.uint8, 3)
        depth = _read(source / frame.depth_file, np.uint16, 1)
        colour, sampled = reduce_frame(rgb, depth, width, height)
        rgb_file, depth_file = f"rgb/{frame.rgb_stamp}.png", f"depth/{frame.depth_stamp}.png"
        # imwrite takes the BGR that imread gave: the file holds RGB as TUM's does.
        for name, image in ((rgb_file, colour), (depth_file, sampled)):
            if not cv2.imwrite(str(out / name), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
                raise FixtureError(f"cannot write {out / name}")
        fields = [frame.rgb_stamp, rgb_file, frame.depth_stamp, depth_file, *frame.pose]
        lines.append(" ".join(fields))
    (out / "frames.txt").write_text("\n".join(lines) + "\n")
    sx, sy = width / full_w, height / full_h
    intrinsics = {
        "fx": FULL_INTRINSICS["fx"] * sx,
        "fy": FULL_INTRINSICS["fy"] * sy,
        "cx": FULL_INTRINSICS["cx"] * sx,
        "cy": FULL_INTRINSICS["cy"] * sy,
        "width": width,
        "height": height,
        "depth_scale": DEPTH_SCALE,
        "full_resolution": FULL_INTRINSICS,
        "depth_step": step,
    }
    (out / "intrinsics.json").write_text(json.dumps(intrinsics, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="TUM rgbd_dataset_freiburg3_teddy directory")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "test" / "fixtures" / "tum_fr3_teddy",
    )
    parser.add_argument("--stamps", nargs="+", default=list(DEFAULT_STAMPS))
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    args = parser.parse_args(argv)
    try:
        if not args.source.is_dir():
            raise FixtureError(f"{args.source} is not a directory")
        make_fixture(args.source, args.out, args.stamps, args.width, args.height)
    except (FixtureError, OSError, ValueError) as exc:
        print(f"make_tum_fixture: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(args.stamps)} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
