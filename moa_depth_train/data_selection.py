"""Which datasets a training config describes: train, validation and test sets from image
datasets or rosbags, each checked to hold ground truth before the first step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from moa_depth_train.augment import Augmentation
from moa_depth_train.bag_dataset import BagDataset, Labeler, bag_datasets, cache_dir_of
from moa_depth_train.config import ConfigError, DataConfig
from moa_depth_train.datasets import ListedRgbdDataset, hold_out_scenes, make_dataset
from moa_depth_train.directories import check_writable_dir
from moa_depth_train.rgbd_dataset import Augment, RgbdDataset

__all__ = ["DataSplits", "GroundTruthError", "check_data_dirs", "select_datasets"]

#: What counts as a valid depth pixel, for messages.
VALID_PIXEL = "a depth pixel that is finite and > 0"


class GroundTruthError(ValueError):
    """A dataset (or bag) without a single valid depth pixel: nothing to train or score on."""


@dataclass(frozen=True)
class DataSplits:
    """The datasets of a run (validation and test are optional)."""

    train: RgbdDataset
    val: RgbdDataset | None
    test: RgbdDataset | None

    def named(self) -> Iterator[tuple[str, RgbdDataset]]:
        """(role, dataset) of each dataset present: train, val, test."""
        for role in ("train", "val", "test"):
            dataset = getattr(self, role)
            if dataset is not None:
                yield role, dataset


def check_data_dirs(data: DataConfig) -> None:
    """The bag cache must be writable before any bag is decoded (named in the error)."""
    if data.type == "bag":
        check_writable_dir(cache_dir_of(data), "data.cache_dir")


def _file_dataset(data: DataConfig, key: str, augment: Augment | None, seed: int) -> RgbdDataset:
    """The image dataset of ``data.<key>`` with its own roots (``<key>_root``, ...)."""
    root, depth_root = data.roots(key)
    split = "train" if key == "train" else "test"
    try:
        return make_dataset(
            getattr(data, key), split, augment=augment, seed=seed, data_root=root,
            kind=data.dataset, depth_root=depth_root,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(f"data.{key}: {err}") from err


def _file_datasets(data: DataConfig, augment: Augment | None, seed: int) -> DataSplits:
    train = _file_dataset(data, "train", augment, seed)
    val = _file_dataset(data, "val", None, seed) if data.val else None
    if val is None and data.val_fraction:
        if not isinstance(train, ListedRgbdDataset):
            raise ConfigError(
                f"data.val_fraction holds out scenes of a list or sync-layout training set, "
                f"not of {train.describe()}; give data.val"
            )
        train_idx, val_idx = hold_out_scenes(train, data.val_fraction, seed)
        val = train.subset(val_idx, augment=None)
        train = train.subset(train_idx, augment)
    test = _file_dataset(data, "test", None, seed) if data.test else None
    return DataSplits(train, val, test)


def require_ground_truth(splits: DataSplits) -> None:
    """GroundTruthError naming the dataset (or the bag and its depth topic) of the first set
    without one sample that has a valid depth pixel: every step would be skipped, every
    score empty."""
    for role, dataset in splits.named():
        if isinstance(dataset, BagDataset):
            for bag, frames in dataset.bags_without_ground_truth():
                raise GroundTruthError(
                    f"bag '{bag.name}': no valid ground truth: none of its {frames} {role} "
                    f"frames has {VALID_PIXEL} on {bag.labels.source} (all 0, NaN or "
                    f"negative); {bag.labels.hint}"
                )
            continue
        search = dataset.find_ground_truth()
        if search.index is None:
            unreadable = (
                f"; {search.unreadable} unreadable: {search.first_problem}"
                if search.unreadable
                else ""
            )
            raise GroundTruthError(
                f"data.{role} ({dataset.describe()}): no valid ground truth: none of its "
                f"{len(dataset)} samples has {VALID_PIXEL}{unreadable}"
            )


def select_datasets(
    data: DataConfig,
    seed: int,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    teacher: Labeler | None = None,
) -> DataSplits:
    """The train / validation / test sets ``data`` describes, checked to hold ground truth.
    ``report`` gets one line per bag. ``teacher``: the label source of distillation (bags).
    ValueError (one line, naming the key or the bag) for data that cannot be trained on."""
    augment = Augmentation(data.augment) if data.augment is not None else None
    if data.type == "bag":
        splits = DataSplits(*bag_datasets(data, augment, seed, progress, report, teacher))
    else:
        splits = _file_datasets(data, augment, seed)
    require_ground_truth(splits)
    return splits
