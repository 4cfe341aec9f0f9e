"""The official NYU Depth V2 split read straight from ``nyu_depth_v2_labeled.mat``.

The labeled .mat (MATLAB v7.3, i.e. HDF5) holds the 1449 labelled frames; ``splits.mat``
beside it lists the official 654 test and 795 train frames. The standard extraction script
(``moa-depth-prepare nyu-extract``) writes them as ``official_splits/<split>/<scene>/``, which
the list-file datasets read; this reader gives the same samples without extracting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moa_depth_ros.geometry import NYU_FOCAL
from moa_depth_train.augment import NYU_SIZE
from moa_depth_train.rgbd_dataset import Augment, RgbdDataset

__all__ = [
    "MAT_NAME",
    "NYU_EXTRACTION_REGION",
    "SPLITS",
    "SPLITS_NAME",
    "NyuLabeledMatDataset",
    "load_split_indices",
    "with_extraction_border",
]

SPLITS = ("train", "test")
MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLITS_NAME = "splits.mat"

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


class NyuLabeledMatDataset(RgbdDataset):
    """One official split (654 test / 795 train frames) of ``nyu_depth_v2_labeled.mat``.

    Depth is `rawDepths` (not the in-painted `depths`), as in the standard extraction script.
    With `match_extraction` (default) a sample is also identical to what that script writes:
    RGB outside [7:474, 7:632] blacked out, depth truncated to millimetres.
    """

    name = "NYU"

    def __init__(
        self,
        mat: str | Path,
        splits_file: str | Path | None = None,
        split: str = "test",
        augment: Augment | None = None,
        seed: int = 0,
        match_extraction: bool = True,
    ) -> None:
        super().__init__(augment, seed)
        self.source = Path(mat)
        self.split = split
        self.match_extraction = match_extraction
        self._h5 = None
        if not self.source.is_file():
            raise ValueError(
                f"NYU labeled .mat {self.source} does not exist: expected {MAT_NAME} "
                f"with {SPLITS_NAME} next to it"
            )
        splits_file = Path(splits_file) if splits_file else self.source.with_name(SPLITS_NAME)
        if not splits_file.is_file():
            raise ValueError(
                f"{SPLITS_NAME} not found at {splits_file}; pass splits_file= to point at it"
            )
        self.indices = load_split_indices(splits_file, split)
        self._check_layout(splits_file)

    def _check_layout(self, splits_file: Path) -> None:
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
            or depths.shape != (images.shape[0], *images.shape[2:])
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
        return len(self.indices)

    def describe(self) -> str:
        return f"{self.source} ({self.split} split)"

    def _path(self, index: int) -> str:
        return f"{self.source}#{int(self.indices[index]) + 1}"  # 1-based like testNdxs

    def _read_depth(self, index: int) -> np.ndarray:
        frame = int(self.indices[index])
        depth = np.ascontiguousarray(self._open()["rawDepths"][frame].T, dtype=np.float32)
        if self.match_extraction:
            depth = np.floor(depth * 1000.0) / 1000.0  # the script stores uint16(depth·1000)
        return depth.astype(np.float32)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        frame = int(self.indices[index])
        image = np.ascontiguousarray(self._open()["images"][frame].transpose(2, 1, 0))
        if self.match_extraction and image.shape[:2] == NYU_SIZE:
            image = with_extraction_border(image)
        return image, self._read_depth(index), NYU_FOCAL
