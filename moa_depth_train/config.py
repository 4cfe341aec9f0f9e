"""Training configs: YAML files, `--set key.sub=value` overrides, and validation of sections."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from moa_depth_ros.options import parse_override

#: The configs shipped with the package; `--config NAME` finds them from any directory.
CONFIG_DIR = Path(__file__).parent / "configs"

DEFAULTS: dict[str, Any] = {
    "model": {"type": "moa_depthclip"},
    "data": {
        "type": "files",  # files (the image datasets below) | bag (moa_depth_train.bag_dataset)
        "dataset": "nyu",  # nyu | kitti (moa_depth_train.datasets.DATASET_KINDS)
        "train": None,  # BTS list file (or a sync / synthetic directory, scanned)
        "data_root": None,  # root of the training list's image paths (default: its folder)
        "depth_root": None,  # root of its depth paths (KITTI: data_depth_annotated/train)
        "val": None,  # validation list / directory; null: hold out val_fraction of the scenes
        "val_root": None,  # root of the validation list's paths (default: its folder)
        "val_depth_root": None,
        "val_fraction": None,  # share of training scenes held out for model selection
        "test": None,  # the test set (official_splits/test, .mat, or a list): final evaluation
        "test_root": None,
        "test_depth_root": None,
        "num_workers": 2,
        "augment": {},  # moa_depth_train.augment.AugmentConfig fields; null disables it
        "val_max_samples": None,
        # data.type: bag only (val / test then name bags too, used whole):
        "bags": None,  # training bags: rosbag2 directories, .mcap / .db3 files, ROS 1 .bag
        "image_topic": None,  # sensor_msgs/Image or CompressedImage (colour)
        "depth_topic": None,  # 16UC1 mm / 32FC1 m, registered to the colour camera
        "camera_info_topic": None,  # None: the image topic's sibling camera_info
        "focal": None,  # px of the native image; overrides camera_info (or stands in for it)
        "slop_ms": 20.0,  # largest header.stamp difference of an image/depth pair
        "stride": 1,  # keep every stride-th pair
        "segment_s": 10.0,  # val_fraction holds out whole segments of this many seconds
        "cache_dir": None,  # decoded frames; None: $XDG_CACHE_HOME/moa_depth_ros/bags
    },
    "loss": {"type": "hybrid"},  # the other keys: that loss type's settings (losses.py)
    "optim": {
        "lr_new": 1.0e-4,
        "lr_backbone": 1.0e-5,
        "weight_decay": 0.01,
        "batch_size": 8,  # per process; the global batch is batch_size × processes
        "epochs": 1,
        "max_steps": None,  # overrides epochs when set
        "warmup_steps": 100,
        "warmup_ratio": None,  # overrides warmup_steps: this share of all steps
        "min_lr_ratio": 0.01,
        "schedule": "warmup_cosine",  # or "step": ×step_gamma every step_epochs (StepLR)
        "step_epochs": 20,
        "step_gamma": 0.1,
        "grad_clip": 1.0,
        "amp": "bf16",  # bf16 | fp16 | none; CUDA only (CPU always trains in fp32)
        "ema_decay": None,  # e.g. 0.996: keep an EMA of the weights and select raw or EMA
    },
    "eval": {
        "every_steps": 1000,
        "protocol": "eigen",  # moa_depth_ros.evaluation.PROTOCOLS
        "min_depth": None,  # None: the protocol's range
        "max_depth": None,
        "select_metric": "abs_rel",
        "select_on": "val",  # val | test (explicit, labelled in the checkpoint)
        "flip_tta": False,  # during training-time validation
        "final_flip_tta": True,  # for the final test evaluation of best.safetensors
    },
    "run": {
        "out_dir": "runs/default",
        "seed": 0,
        "device": "auto",
        "log_every": 10,
        "image_every": 200,
        "checkpoint_every": 500,
        "max_bad_steps": 10,  # abort after this many consecutive NaN/inf or empty steps
        "stop_after_steps": None,  # stop early (the schedule still uses the full length)
        "init": None,  # a .safetensors checkpoint to start from (--init): fine-tuning
    },
}

#: Sections whose keys are checked by their consumer (model config, loss, augmentation).
_FREE_FORM = ("model", "loss", "data.augment")


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base and where not in _FREE_FORM:
            raise ValueError(f"unknown config key '{where + '.' if where else ''}{key}'")
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(base[key], value, f"{where}.{key}" if where else key)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``moa_depth_train/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_config(name_or_path: str | Path) -> Path:
    """A YAML file path, or the name of a shipped config (``demo_synthetic``); ValueError else."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ValueError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config "
        f"(shipped: {', '.join(shipped_configs())})"
    )


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """DEFAULTS ← YAML file (or shipped config name) ← overrides; unknown keys name the key."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(find_config(path)) as handle:
            data = yaml.safe_load(handle) or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return _merge(DEFAULTS, data, "")
