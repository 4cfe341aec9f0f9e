"""Image datasets on disk: RGB + uint16 depth PNG pairs (NYU sync / official_splits, KITTI),
listed in a BTS list file or found by scanning, and ``make_dataset``, which picks the reader
for a path.

Samples are those of ``moa_depth_train.rgbd_dataset``. The official NYU ``.mat`` is read by
``moa_depth_train.nyu_mat`` when a path names it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from moa_depth_ros.geometry import NYU_FOCAL
from moa_depth_train.config import DATASET_KINDS
from moa_depth_train.nyu_mat import MAT_NAME, SPLITS, NyuLabeledMatDataset
from moa_depth_train.rgbd_dataset import Augment, BadSampleError, RgbdDataset

__all__ = [
    "DATASET_KINDS",
    "KittiDataset",
    "ListedRgbdDataset",
    "NyuSyncDataset",
    "hold_out_scenes",
    "make_dataset",
    "read_list_file",
    "read_rgbd_pair",
    "scan_sync_pairs",
]

RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
SYNC_LAYOUT = "<root>/<scene>/rgb_XXXXX.jpg with <root>/<scene>/sync_depth_XXXXX.png"


def scan_sync_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """Sorted (rgb, depth) pairs under `root` in the BTS sync / official_splits layout.

    Scenes may be nested at any depth; an rgb_X file without its sync_depth_X.png is ignored.
    """
    root = Path(root)
    pairs = []
    for rgb in sorted(root.rglob("rgb_*")):
        if rgb.suffix.lower() not in RGB_SUFFIXES:
            continue
        depth = rgb.with_name("sync_depth_" + rgb.stem[len("rgb_") :] + ".png")
        if depth.is_file():
            pairs.append((rgb, depth))
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_list_file(
    list_file: str | Path, root: str | Path, depth_root: str | Path | None = None
) -> list[tuple[Path, Path, float]]:
    """Parse a BTS-style list file: `[/]rgb_path [/]depth_path [extra] [focal]` per line.

    Paths are relative to `root` (depth paths to `depth_root`, default `root`; a leading slash
    is allowed). The focal length is the last column when it is a number (BTS, AdaBins), else
    the NYU one; extra path columns (the dense-depth column of NeWCRFs / IEBins lists) are
    ignored. Lines whose depth is "None" (no ground truth) are left out.
    """
    root = Path(root)
    depth_root = Path(depth_root) if depth_root is not None else root
    entries = []
    for number, line in enumerate(Path(list_file).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or len(parts) > 4:
            raise ValueError(f"{list_file}:{number}: expected 'rgb depth [focal]', got {line!r}")
        if parts[1] == "None":
            continue
        focal = float(parts[-1]) if len(parts) > 2 and _is_number(parts[-1]) else NYU_FOCAL
        entries.append((root / parts[0].lstrip("/"), depth_root / parts[1].lstrip("/"), focal))
    return entries


def read_depth_png(depth_path: Path, depth_scale: float = 1000.0) -> np.ndarray:
    """Depth float32 H×W metres from a uint16 png holding depth × ``depth_scale``."""
    raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadSampleError(f"cannot read depth {depth_path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise BadSampleError(
            f"depth {depth_path} is {raw.dtype} with shape {raw.shape}; "
            "expected single-channel uint16 millimetres"
        )
    return raw.astype(np.float32) / np.float32(depth_scale)


def read_rgbd_pair(
    rgb_path: Path, depth_path: Path, depth_scale: float = 1000.0
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 H×W×3 and depth float32 H×W metres from an image + uint16 png holding
    depth × ``depth_scale`` (1000: NYU millimetres; 256: KITTI)."""
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadSampleError(f"cannot read image {rgb_path}")
    depth = read_depth_png(depth_path, depth_scale)
    if depth.shape != bgr.shape[:2]:
        raise BadSampleError(f"image {rgb_path} is {bgr.shape[:2]} but depth is {depth.shape}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth


class ListedRgbdDataset(RgbdDataset):
    """RGB images with uint16 depth PNGs (depth × ``depth_scale``), listed in a BTS list file
    whose paths are relative to `root` (depth paths to `depth_root` when given), or found by
    scanning `root` where the layout allows it (``_scan``)."""

    depth_scale = 1000.0

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        depth_root: str | Path | None = None,
    ) -> None:
        super().__init__(augment, seed)
        self.root = Path(root)
        self.list_file = list_file
        if not self.root.is_dir():
            raise ValueError(
                f"{self.name} data root {self.root} does not exist or is not a directory "
                f"(expected {self.layout()})"
            )
        if list_file is not None:
            self.entries = read_list_file(list_file, self.root, depth_root)
            where = f"list file {list_file} (paths relative to {self.root})"
        else:
            self.entries = self._scan()
            where = str(self.root)
        if not self.entries:
            raise ValueError(
                f"no {self.name} RGB-D pairs found in {where}: expected {self.layout()}"
            )

    def layout(self) -> str:
        """The on-disk layout, for messages."""
        return SYNC_LAYOUT

    def _scan(self) -> list[tuple[Path, Path, float]]:
        raise ValueError(f"{self.name} data needs a list file ({self.layout()})")

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> str:
        return str(self.list_file or self.root)

    def _path(self, index: int) -> str:
        return str(self.entries[index][0])

    def _read_depth(self, index: int) -> np.ndarray:
        return read_depth_png(self.entries[index][1], self.depth_scale)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        rgb_path, depth_path, focal = self.entries[index]
        image, depth = read_rgbd_pair(rgb_path, depth_path, self.depth_scale)
        return image, depth, focal

    def scene(self, index: int) -> str:
        """The scene (NYU) or drive (KITTI) a sample belongs to: its image's folder path."""
        rgb = self.entries[index][0]
        try:
            return str(rgb.parent.relative_to(self.root))
        except ValueError:
            return str(rgb.parent)

    def subset(self, indices: Sequence[int], augment: Augment | None) -> ListedRgbdDataset:
        """The same kind of dataset over ``indices`` only, with its own augmentation."""
        subset = copy.copy(self)
        subset.entries = [self.entries[i] for i in indices]
        subset.augment, subset.skipped = augment, []
        return subset


class NyuSyncDataset(ListedRgbdDataset):
    """NYU Depth V2 in the BTS sync layout (`<root>/<scene>/rgb_XXXXX.jpg` +
    `sync_depth_XXXXX.png`, uint16 millimetres; also the extracted `official_splits/<split>`),
    scanned or listed in a BTS list file."""

    name = "NYU"
    depth_scale = 1000.0

    def _scan(self) -> list[tuple[Path, Path, float]]:
        return [(rgb, depth, NYU_FOCAL) for rgb, depth in scan_sync_pairs(self.root)]


class KittiDataset(ListedRgbdDataset):
    """KITTI Eigen split in the BTS / AdaBins layout: list lines
    `<date>/<drive>_sync/image_02/data/X.png <drive>_sync/proj_depth/groundtruth/image_02/X.png
    <focal>`, images under `root` (raw KITTI), depth under `depth_root`
    (`data_depth_annotated`), uint16 PNG holding metres × 256, 0 invalid."""

    name = "KITTI"
    depth_scale = 256.0

    def layout(self) -> str:
        return "an Eigen split list file, images under the raw KITTI root"


def hold_out_scenes(
    dataset: ListedRgbdDataset, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split sample indices into (train, validation) by whole scenes: a seeded ``fraction`` of
    the scenes is held out, so validation never sees a room the model trained on."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {fraction}")
    scenes = sorted({dataset.scene(i) for i in range(len(dataset))})
    if len(scenes) < 2:
        raise ValueError(
            f"cannot hold out scenes for validation: {dataset.describe()} has {len(scenes)} scene"
        )
    order = np.random.default_rng(seed).permutation(len(scenes))
    count = min(max(1, round(fraction * len(scenes))), len(scenes) - 1)
    held = {scenes[i] for i in order[:count]}
    val = [i for i in range(len(dataset)) if dataset.scene(i) in held]
    train = [i for i in range(len(dataset)) if dataset.scene(i) not in held]
    return train, val


def make_dataset(
    root_or_file: str | Path,
    split: str = "train",
    augment: Augment | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    kind: str = "nyu",
    depth_root: str | Path | None = None,
) -> RgbdDataset:
    """Pick the dataset class from what `root_or_file` is.

    ``kind="kitti"``: `root_or_file` is an Eigen list file, images under `data_root`, depth
    under `depth_root`. ``kind="nyu"``:

    - `*.mat` → that `split` of `nyu_depth_v2_labeled.mat` (+ `splits.mat` beside it); the
      only way to train on the official 795-frame train split: name the .mat itself;
    - another file → BTS list file, paths relative to `data_root` (default: its folder);
    - a directory holding `<split>_files.txt` (as written by moa_depth_ros.synthetic) → that list;
    - a directory holding `sync/` (train) or `official_splits/<split>/` or `<split>/` → that;
    - for the test split, a directory holding `nyu_depth_v2_labeled.mat` → its test split;
    - any other directory → scanned for the sync layout.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {kind!r}")
    path = Path(root_or_file)
    if kind == "kitti":
        if not path.is_file():
            raise ValueError(f"KITTI list file {path} not found (an Eigen split list)")
        return KittiDataset(
            data_root or path.parent, path, augment=augment, seed=seed, depth_root=depth_root
        )
    if path.is_file():
        if path.suffix.lower() == ".mat":
            return NyuLabeledMatDataset(path, split=split, augment=augment, seed=seed)
        return NyuSyncDataset(
            data_root or path.parent, path, augment=augment, seed=seed, depth_root=depth_root
        )
    if not path.is_dir():
        raise ValueError(
            f"NYU data {path} does not exist: expected a sync/official_splits directory, "
            f"a BTS list file or {MAT_NAME}"
        )
    list_file = path / f"{split}_files.txt"
    if list_file.is_file():
        return NyuSyncDataset(data_root or path, list_file, augment=augment, seed=seed)
    candidates: Sequence[Path] = (
        *([path / "sync"] if split == "train" else []),
        path / "official_splits" / split,
        path / split,
    )
    for candidate in candidates:
        if candidate.is_dir():
            return NyuSyncDataset(candidate, augment=augment, seed=seed)
    mat = path / MAT_NAME
    if split == "test" and mat.is_file():
        return NyuLabeledMatDataset(mat, split=split, augment=augment, seed=seed)
    try:
        return NyuSyncDataset(path, augment=augment, seed=seed)
    except ValueError as err:
        if mat.is_file():  # training on the .mat's 795 frames is asked for by naming it
            raise ValueError(f"{err}; to train on the official train split name {mat}") from err
        raise
