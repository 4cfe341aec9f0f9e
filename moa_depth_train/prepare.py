"""Data preparation: fetch the public NYU files, extract the official splits, check a sync tree
(the command is ``moa-depth-prepare``, ``moa_depth_train.cli.prepare``).

``nyu-extract`` writes exactly what the standard ``extract_official_train_test_set_from_mat.py``
(BTS) writes: ``<out>/{train,test}/<sceneType>/rgb_%05d.jpg`` (0-based frame index, only
``[7:474, 7:632]`` kept, the rest black) and ``sync_depth_%05d.png`` = uint16(rawDepths·1000).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.progress import progress_bar
from moa_depth_train.datasets import read_list_file
from moa_depth_train.nyu_mat import load_split_indices, with_extraction_border

CHUNK = 1 << 20


@dataclass(frozen=True)
class PublicFile:
    url: str
    lines: int | None = None  # expected line count of a list file
    sha256: str | None = None  # None: not recorded here (the download prints what it got)


#: The BTS list files (cleinc/bts, train_test_inputs/).
BTS_LISTS = {
    "nyudepthv2_train_files_with_gt.txt": PublicFile(
        "https://raw.githubusercontent.com/cleinc/bts/master/train_test_inputs/"
        "nyudepthv2_train_files_with_gt.txt",
        lines=24_231,
    ),
    "nyudepthv2_test_files_with_gt.txt": PublicFile(
        "https://raw.githubusercontent.com/cleinc/bts/master/train_test_inputs/"
        "nyudepthv2_test_files_with_gt.txt",
        lines=654,
    ),
}


class PrepareError(RuntimeError):
    """A preparation step failed; one line."""


# ------------------------------------------------------------------ download


def download(
    url: str, out: Path, sha256: str | None = None, progress: bool = True, timeout: float = 30.0
) -> str:
    """Fetch ``url`` to ``out``, resuming a previous ``out.part`` with an HTTP Range request;
    verify ``sha256`` when given. Returns the file's SHA-256. PrepareError on any failure (the
    partial file is kept for the next try unless its checksum is wrong)."""
    out = Path(out)
    if out.is_file():
        digest = file_sha256(out)  # read once: the file may be the 2.8 GB NYU .mat
        if sha256 is None or digest == sha256.lower():
            return digest
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = response.status == 206
            if not resumed:
                have = 0  # the server sends the whole file: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with (
                open(part, "ab" if resumed else "wb") as handle,
                progress_bar(
                    total=total, initial=have, unit="B", unit_scale=True, desc=out.name,
                    disable=not progress,
                ) as bar,
            ):  # fmt: skip
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    bar.update(len(block))
            received = part.stat().st_size
            if total is not None and received < total:
                raise PrepareError(
                    f"cannot download {url}: the connection closed after {received} of {total} "
                    f"bytes ({received} bytes kept in {part}; run again to resume)"
                )
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already complete
            pass
        else:
            raise PrepareError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise PrepareError(
            f"cannot download {url}: {one_line(getattr(err, 'reason', err))} "
            f"({part.stat().st_size if part.is_file() else 0} bytes kept in {part}; run again "
            "to resume)"
        ) from err
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise PrepareError(f"{url}: SHA-256 {digest} does not match the expected {sha256}")
    part.replace(out)
    return digest


def fetch_lists(out_dir: Path, base_url: str | None = None, progress: bool = True) -> list[Path]:
    """Download the BTS list files into ``out_dir`` and check their line counts."""
    written = []
    for name, public in BTS_LISTS.items():
        url = f"{base_url.rstrip('/')}/{name}" if base_url else public.url
        path = out_dir / name
        download(url, path, public.sha256, progress)
        lines = sum(1 for line in path.read_text().splitlines() if line.strip())
        if public.lines is not None and lines != public.lines:
            raise PrepareError(f"{path}: {lines} lines, expected {public.lines} ({url})")
        written.append(path)
    return written


# ------------------------------------------------------------------ official splits


def _scene_types(h5) -> list[str]:
    """``sceneTypes``: one HDF5 object reference per frame to a MATLAB char array."""
    return [
        "".join(chr(int(c)) for c in np.asarray(h5[ref]).ravel()) for ref in h5["sceneTypes"][0]
    ]


def extract_official_splits(
    mat: Path, splits: Path, out: Path, progress: bool = True
) -> dict[str, int]:
    """The standard extraction script, with h5py (see module doc); counts per split."""
    import h5py  # training-only dependency

    split_of = {int(i): "train" for i in load_split_indices(splits, "train")}
    split_of.update({int(i): "test" for i in load_split_indices(splits, "test")})
    try:
        h5 = h5py.File(mat, "r")
    except OSError as err:
        raise PrepareError(f"cannot open {mat} as HDF5 (MATLAB v7.3): {one_line(err)}") from err
    counts = {"train": 0, "test": 0}
    with h5:
        for key in ("images", "rawDepths", "sceneTypes"):
            if key not in h5:
                raise PrepareError(f"{mat} has no '{key}' (expected nyu_depth_v2_labeled.mat)")
        scenes = _scene_types(h5)
        images, depths = h5["images"], h5["rawDepths"]
        for i in progress_bar(
            range(images.shape[0]), desc="extract", unit="frame", disable=not progress
        ):
            if i not in split_of:
                raise PrepareError(f"frame {i + 1} of {mat} is in neither split of {splits}")
            folder = out / split_of[i] / scenes[i]
            folder.mkdir(parents=True, exist_ok=True)
            # float32 · 1000 then truncation, exactly as the script (h5py gives float32).
            depth_mm = (np.asarray(depths[i]).T * 1000.0).astype(np.uint16)
            if not cv2.imwrite(str(folder / f"sync_depth_{i:05d}.png"), depth_mm):
                raise PrepareError(f"cannot write {folder / f'sync_depth_{i:05d}.png'}")
            bordered = with_extraction_border(np.asarray(images[i]).T)  # 3×W×H → H×W×3
            rgb_path = folder / f"rgb_{i:05d}.jpg"
            if not cv2.imwrite(str(rgb_path), np.ascontiguousarray(bordered[..., ::-1])):
                raise PrepareError(f"cannot write {rgb_path}")
            counts[split_of[i]] += 1
    return counts


def verify_tree(root: Path, list_file: Path) -> tuple[int, list[str]]:
    """(pairs listed, missing files) of a sync tree against a BTS list file."""
    entries = read_list_file(list_file, root)
    missing = [str(p) for rgb, depth, _ in entries for p in (rgb, depth) if not p.is_file()]
    return len(entries), missing
