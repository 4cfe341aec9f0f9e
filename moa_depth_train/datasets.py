"""NYU Depth V2 datasets: BTS "sync" layout / list files and the official 654-image test set.

Every sample is a dict: `image` uint8 tensor 3×H×W (RGB), `depth` float32 tensor 1×H×W in
metres (0 = invalid), `focal` (float, pixels) and `path` (str). Unreadable samples are
reported once with logging.warning, recorded in `dataset.skipped` and replaced by the next
readable one, so one bad file does not stop a training run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from moa_depth_ros.geometry import NYU_FOCAL
from moa_depth_train.augment import NYU_SIZE

log = logging.getLogger(__name__)

#: (top, bottom, left, right): the region of the RGB frame the official extraction script
#: keeps (black outside it). Not a crop BTS applies.
NYU_EXTRACTION_REGION = (7, 474, 7, 632)


def with_extraction_border(rgb: np.ndarray) -> np.ndarray:
    """A raw NYU RGB frame as the official extraction script writes it: black outside
    :data:`NYU_EXTRACTION_REGION`."""
    top, bottom, left, right = NYU_EXTRACTION_REGION
    bordered = np.zeros_like(rgb)
    bordered[top:bottom, left:right] = rgb[top:bottom, left:right]
    return bordered


SPLITS = ("train", "test")
DATASET_KINDS = ("nyu", "kitti")
MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLITS_NAME = "splits.mat"
RGB_SUFFIXES = (".jpg", ".jpeg", ".png")
SYNC_LAYOUT = "<root>/<scene>/rgb_XXXXX.jpg with <root>/<scene>/sync_depth_XXXXX.png"

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class BadSampleError(Exception):
    """A sample that cannot be read or has inconsistent shapes."""


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


def read_rgbd_pair(
    rgb_path: Path, depth_path: Path, depth_scale: float = 1000.0
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 H×W×3 and depth float32 H×W metres from an image + uint16 png holding
    depth × ``depth_scale`` (1000: NYU millimetres; 256: KITTI)."""
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadSampleError(f"cannot read image {rgb_path}")
    raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadSampleError(f"cannot read depth {depth_path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise BadSampleError(
            f"depth {depth_path} is {raw.dtype} with shape {raw.shape}; "
            "expected single-channel uint16 millimetres"
        )
    if raw.shape != bgr.shape[:2]:
        raise BadSampleError(f"image {rgb_path} is {bgr.shape[:2]} but depth is {raw.shape}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb, raw.astype(np.float32) / np.float32(depth_scale)


class _RgbdDataset(Dataset):
    """Shared sample assembly, augmentation seeding and bad-sample skipping."""

    def __init__(self, augment: Augment | None, seed: int) -> None:
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.skipped: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws per epoch while keeping them reproducible."""
        self.epoch = epoch

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def _path(self, index: int) -> str:
        raise NotImplementedError

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Sample ``index``; ``(epoch, index)`` (what the training sampler yields) draws that
        epoch's augmentation, so persistent DataLoader workers need no epoch broadcast."""
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for {size} samples")
        index %= size
        for offset in range(size):
            current = (index + offset) % size
            try:
                image, depth, focal = self._read(current)
            except BadSampleError as error:
                path = self._path(current)
                if path not in self.skipped:
                    self.skipped.append(path)
                    log.warning("skipping unreadable NYU sample %s: %s", path, error)
                continue
            return self._to_sample(image, depth, focal, current, epoch)
        raise RuntimeError(
            f"no readable sample among {size} in {type(self).__name__} ({self.describe()})"
        )

    def describe(self) -> str:
        """Where the samples come from (for error messages)."""
        return self._path(0) if len(self) else "empty"

    def _to_sample(
        self, image: np.ndarray, depth: np.ndarray, focal: float, index: int, epoch: int
    ) -> dict:
        if self.augment is not None:
            # Seeded per (seed, epoch, index): identical in any DataLoader worker layout.
            rng = np.random.default_rng([self.seed, epoch, index])
            image, depth = self.augment(image, depth, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "focal": float(focal),
            "path": self._path(index),
        }


class NyuSyncDataset(_RgbdDataset):
    """BTS sync layout (`<root>/<scene>/rgb_XXXXX.jpg` + `sync_depth_XXXXX.png`), found by
    scanning `root` or listed in a BTS list file whose paths are relative to `root` (depth
    paths relative to `depth_root` when given, as KITTI's annotated depth lives apart)."""

    name = "NYU"
    depth_scale = 1000.0  # uint16 millimetres

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
                f"(expected {SYNC_LAYOUT})"
            )
        if list_file is not None:
            self.entries = read_list_file(list_file, self.root, depth_root)
            where = f"list file {list_file} (paths relative to {self.root})"
        else:
            self.entries = [(rgb, dep, NYU_FOCAL) for rgb, dep in scan_sync_pairs(self.root)]
            where = str(self.root)
        if not self.entries:
            raise ValueError(f"no {self.name} RGB-D pairs found in {where}: expected {SYNC_LAYOUT}")

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> str:
        return str(self.list_file or self.root)

    def _path(self, index: int) -> str:
        return str(self.entries[index][0])

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

    def subset(self, indices: Sequence[int], augment: Augment | None) -> NyuSyncDataset:
        """The same kind of dataset over ``indices`` only, with its own augmentation."""
        subset = copy.copy(self)
        subset.entries = [self.entries[i] for i in indices]
        subset.augment, subset.skipped = augment, []
        return subset


class KittiDataset(NyuSyncDataset):
    """KITTI Eigen split in the BTS / AdaBins layout: list lines
    `<date>/<drive>_sync/image_02/data/X.png <drive>_sync/proj_depth/groundtruth/image_02/X.png
    <focal>`, images under `root` (raw KITTI), depth under `depth_root`
    (`data_depth_annotated`), uint16 PNG holding metres × 256, 0 invalid."""

    name = "KITTI"
    depth_scale = 256.0


def hold_out_scenes(
    dataset: NyuSyncDataset, fraction: float, seed: int
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


def load_split_indices(splits_path: str | Path, split: str = "test") -> np.ndarray:
    """0-based frame indices of the official split from `splits.mat` (1-based `testNdxs`)."""
    import scipy.io  # training-only dependency

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = f"{split}Ndxs"
    try:
        splits = scipy.io.loadmat(str(splits_path))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read NYU splits file {splits_path}: {error}") from error
    if key not in splits:
        raise ValueError(f"{splits_path} has no {key!r} (expected the official NYU splits.mat)")
    return np.asarray(splits[key], dtype=np.int64).reshape(-1) - 1


class NyuOfficialTestDataset(_RgbdDataset):
    """The official NYU split (654 test / 795 train images), from `nyu_depth_v2_labeled.mat` +
    `splits.mat`, or from the extracted `official_splits/<split>/<scene>/` layout.

    From the .mat, depth is `rawDepths` (not the in-painted `depths`), as in the standard
    extraction script. With `match_extraction` (default) the sample is also made identical
    to what that script writes: RGB outside [7:474, 7:632] blacked out, depth truncated to mm.
    """

    def __init__(
        self,
        source: str | Path,
        splits_file: str | Path | None = None,
        split: str = "test",
        augment: Augment | None = None,
        seed: int = 0,
        match_extraction: bool = True,
    ) -> None:
        super().__init__(augment, seed)
        self.source = Path(source)
        self.match_extraction = match_extraction
        self._h5 = None
        self.pairs: list[tuple[Path, Path]] = []
        self.indices = np.zeros(0, dtype=np.int64)
        if self.source.is_dir():
            self.pairs = scan_sync_pairs(self.source)
            if not self.pairs:
                raise ValueError(
                    f"no NYU RGB-D pairs found in {self.source}: expected the extracted "
                    f"official_splits/{split} layout, {SYNC_LAYOUT}"
                )
        elif self.source.is_file():
            self._init_mat(splits_file, split)
        else:
            raise ValueError(
                f"NYU test source {self.source} does not exist: expected {MAT_NAME} "
                f"(with {SPLITS_NAME} next to it) or an official_splits/{split} directory"
            )

    def _init_mat(self, splits_file: str | Path | None, split: str) -> None:
        splits_file = Path(splits_file) if splits_file else self.source.with_name(SPLITS_NAME)
        if not splits_file.is_file():
            raise ValueError(
                f"{SPLITS_NAME} not found at {splits_file}; pass splits_file= to point at it"
            )
        self.indices = load_split_indices(splits_file, split)
        h5 = self._open()
        try:
            images, depths = h5["images"], h5["rawDepths"]
        except KeyError as error:
            raise ValueError(
                f"{self.source} has no 'images'/'rawDepths' datasets; expected {MAT_NAME}"
            ) from error
        # MATLAB stores H×W×3×N column-major, which h5py exposes as N×3×W×H.
        if (
            images.ndim != 4
            or images.shape[1] != 3
            or depths.shape
            != (
                images.shape[0],
                *images.shape[2:],
            )
        ):
            raise ValueError(
                f"{self.source}: images {images.shape} / rawDepths {depths.shape} do not have "
                "the NYU v7.3 layout N×3×W×H / N×W×H"
            )
        count = images.shape[0]
        if len(self.indices) == 0 or self.indices.min() < 0 or self.indices.max() >= count:
            raise ValueError(f"{splits_file} indices do not fit the {count} frames in the .mat")

    def _open(self):
        # Opened lazily so the dataset pickles into DataLoader workers (h5py handles do not).
        if self._h5 is None:
            import h5py  # training-only dependency

            try:
                self._h5 = h5py.File(self.source, "r")
            except OSError as error:
                raise ValueError(
                    f"cannot open {self.source} as HDF5 (MATLAB v7.3, like {MAT_NAME}): {error}"
                ) from error
        return self._h5

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs else len(self.indices)

    def _path(self, index: int) -> str:
        if self.pairs:
            return str(self.pairs[index][0])
        return f"{self.source}#{int(self.indices[index]) + 1}"  # 1-based like testNdxs

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        if self.pairs:
            image, depth = read_rgbd_pair(*self.pairs[index])
            return image, depth, NYU_FOCAL
        h5 = self._open()
        frame = int(self.indices[index])
        image = np.ascontiguousarray(h5["images"][frame].transpose(2, 1, 0))
        depth = np.ascontiguousarray(h5["rawDepths"][frame].T, dtype=np.float32)
        if self.match_extraction:
            depth = np.floor(depth * 1000.0) / 1000.0  # the script stores uint16(depth·1000)
            if image.shape[:2] == NYU_SIZE:
                image = with_extraction_border(image)
        return image, depth.astype(np.float32), NYU_FOCAL


def make_dataset(
    root_or_file: str | Path,
    split: str = "train",
    augment: Augment | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    kind: str = "nyu",
    depth_root: str | Path | None = None,
) -> NyuSyncDataset | NyuOfficialTestDataset:
    """Pick the dataset class from what `root_or_file` is.

    ``kind="kitti"``: `root_or_file` is an Eigen list file, images under `data_root`, depth
    under `depth_root`. ``kind="nyu"``:

    - `*.mat` → official split from `nyu_depth_v2_labeled.mat` (+ `splits.mat` beside it);
    - another file → BTS list file, paths relative to `data_root` (default: its folder);
    - a directory holding `<split>_files.txt` (as written by moa_depth_ros.synthetic) → that list;
    - a directory holding `sync/` (train) or `official_splits/<split>/` or `<split>/`,
      or `nyu_depth_v2_labeled.mat` → that;
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
            return NyuOfficialTestDataset(path, split=split, augment=augment, seed=seed)
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
            return _dataset_for_dir(candidate, split, augment, seed)
    if (path / MAT_NAME).is_file():
        return NyuOfficialTestDataset(path / MAT_NAME, split=split, augment=augment, seed=seed)
    return _dataset_for_dir(path, split, augment, seed)


def _dataset_for_dir(
    path: Path, split: str, augment: Augment | None, seed: int
) -> NyuSyncDataset | NyuOfficialTestDataset:
    if split == "test":
        return NyuOfficialTestDataset(path, split=split, augment=augment, seed=seed)
    return NyuSyncDataset(path, augment=augment, seed=seed)
