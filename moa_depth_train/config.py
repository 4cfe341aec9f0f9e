"""Training configs: YAML files, ``--set key.sub=value`` overrides, and the typed config.

``load_config`` merges DEFAULTS ← a YAML file (or a shipped config's name) ← overrides into a
plain dict (what ``config.yaml`` in a run directory holds); ``TrainingConfig.from_dict`` turns
that dict into frozen dataclasses, one per section, checking every value once, with errors
that name the key ("data.stride must be >= 1, got 0"). ``model`` and ``loss`` stay free-form:
the model registry and ``losses.build_loss`` check their keys. Settings that only make sense
together (``distill.teacher`` and ``data.type: bag``, ``data.anchor_topic`` and a teacher) are
checked across sections by ``TrainingConfig.from_dict``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from moa_depth_ros.anchoring import (
    DEFAULT_MAX_RESIDUAL,
    DEFAULT_MAX_SCALE_CHANGE,
    DEFAULT_MAX_SCALE_FACTOR,
    DEFAULT_MIN_POINTS,
    SETTING_RANGES,
)
from moa_depth_ros.errors import check_depth_range
from moa_depth_ros.evaluation.metrics import METRIC_NAMES
from moa_depth_ros.evaluation.scoring import PROTOCOLS, get_protocol
from moa_depth_ros.options import PRECISIONS, parse_override
from moa_depth_train.augment import AugmentConfig

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "OptimConfig",
    "RunConfig",
    "TrainingConfig",
    "find_config",
    "load_config",
    "shipped_configs",
]

#: The configs shipped with the package; `--config NAME` finds them from any directory.
CONFIG_DIR = Path(__file__).parent / "configs"

DATA_TYPES = ("files", "bag")
#: Dataset layouts of data.type files (moa_depth_train.datasets reads them).
DATASET_KINDS = ("nyu", "kitti")
AMP_MODES = ("none", "bf16", "fp16")
#: Learning-rate schedules (moa_depth_train.schedule).
SCHEDULES = ("warmup_cosine", "step")
SELECT_ON = ("val", "test")
#: How a teacher's prediction is fitted to data.anchor_topic (moa_depth_ros.anchoring modes);
#: auto: scale_shift for a relative teacher (inverse depth), scale for a metric one.
DISTILL_ANCHOR_MODES = ("auto", "scale", "scale_shift")

DEFAULTS: dict[str, Any] = {
    "model": {"type": "moa_depthclip"},
    "data": {
        "type": "files",  # files (the image datasets below) | bag (moa_depth_train.bag_dataset)
        "dataset": "nyu",  # nyu | kitti
        "train": None,  # BTS list file, a sync / synthetic directory, or nyu_depth_v2_labeled.mat
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
        # distill.teacher only: sparse metric depth (16UC1 mm / 32FC1 m, registered to the
        # colour camera: projected LiDAR, a holey depth camera) that metricizes the teacher
        "anchor_topic": None,
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
    # Distillation (moa_depth_train.teacher_labels): data.type bag, labels from a teacher model.
    "distill": {
        "teacher": None,  # a checkpoint (.safetensors) or exported graph (.onnx) the node loads
        "device": "auto",  # where the teacher runs while labelling: auto | cpu | cuda[:N]
        "precision": "fp32",  # the teacher's precision (fp32 | fp16 | bf16 on torch)
        "batch_size": 4,  # frames per teacher forward
        # the node's anchoring (moa_depth_ros.anchoring) of the teacher to data.anchor_topic:
        "anchor_mode": "auto",  # auto | scale | scale_shift (auto: by the teacher's output)
        "anchor_smoothing": 0.0,  # 0: each frame its own fit; the node's 0.5 smooths over time
        "anchor_min_points": DEFAULT_MIN_POINTS,
        "anchor_max_residual": DEFAULT_MAX_RESIDUAL,
        "anchor_max_scale_factor": DEFAULT_MAX_SCALE_FACTOR,
        "anchor_max_scale_change": DEFAULT_MAX_SCALE_CHANGE,
    },
}

#: Sections whose keys are checked by their consumer (model config, loss, augmentation).
_FREE_FORM = ("model", "loss", "data.augment")

#: data.* keys only data.type: bag reads (set with image datasets, they would be ignored).
BAG_KEYS = ("bags", "image_topic", "depth_topic", "anchor_topic", "camera_info_topic", "focal",
            "slop_ms", "stride", "segment_s", "cache_dir")  # fmt: skip
#: Largest pairing tolerance and validation segment: beyond them the value is a mistake (and
#: a segment of 1e30 s would overflow the nanosecond arithmetic).
MAX_SLOP_MS = 1000.0
MAX_SEGMENT_S = 1e6
#: numpy's seeds are 32-bit.
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A config value that cannot be used; one line naming the key."""


# ---------------------------------------------------------------------------- loading


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base and where not in _FREE_FORM:
            raise ConfigError(f"unknown config key '{where + '.' if where else ''}{key}'")
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
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config "
        f"(shipped: {', '.join(shipped_configs())})"
    )


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """DEFAULTS ← YAML file (or shipped config name) ← overrides; unknown keys name the key."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(find_config(path)) as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ConfigError(f"{path}: a config is a mapping of sections, got a {kind}")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{key}' is not a section")
        node[keys[-1]] = value
    return _merge(DEFAULTS, data, "")


# ---------------------------------------------------------------------------- value checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer (a whole float such as YAML's 1e4 too) within [minimum, maximum]."""
    if _is_number(value) and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be <= {maximum}, got {value}")
    return value


def _optional_integer(key: str, value: Any, minimum: int) -> int | None:
    return None if value is None else _integer(key, value, minimum)


def _number(
    key: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite number in the interval low..high (open at either end when asked)."""
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")
    return float(value)


def _choice(key: str, value: Any, choices: tuple[str, ...] | Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _optional_text(key: str, value: Any) -> str | None:
    return None if value is None else _text(key, value)


def _path(key: str, value: Any) -> str:
    """A path: YAML may give a bare number (a directory named 2024) as an int."""
    if _is_number(value):
        value = str(value)
    return _text(key, value)


def _optional_path(key: str, value: Any) -> str | None:
    return None if value is None else _path(key, value)


def _free_form(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of settings, got {value!r}")
    return copy.deepcopy(value)


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    # A section a config predates (an older run's config.yaml) is its defaults.
    section = config.get(name, DEFAULTS[name])
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section '{name}' must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(DEFAULTS[name]))
    if unknown:
        raise ConfigError(f"unknown config key '{name}.{unknown[0]}'")
    return {**DEFAULTS[name], **section}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what YAML and JSON write."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """``data.*``: where the samples come from (image datasets or rosbags) and how they load."""

    type: str
    dataset: str
    train: str | None
    data_root: str | None
    depth_root: str | None
    val: str | None
    val_root: str | None
    val_depth_root: str | None
    val_fraction: float | None
    test: str | None
    test_root: str | None
    test_depth_root: str | None
    num_workers: int
    augment: AugmentConfig | None
    val_max_samples: int | None
    bags: tuple[str, ...] | None
    image_topic: str | None
    depth_topic: str | None
    anchor_topic: str | None
    camera_info_topic: str | None
    focal: float | None
    slop_ms: float
    stride: int
    segment_s: float
    cache_dir: str | None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DataConfig:
        kind = _choice("data.type", values["type"], DATA_TYPES)
        bag = kind == "bag"
        if not bag:
            stray = [k for k in BAG_KEYS if values[k] != DEFAULTS["data"][k]]
            if stray:
                raise ConfigError(
                    f"data.{stray[0]} is set but data.type is 'files' (set data.type: bag)"
                )
        fraction = values["val_fraction"]
        augment = values["augment"]
        if augment is not None:
            if not isinstance(augment, Mapping):
                raise ConfigError(f"data.augment must be a mapping or null, got {augment!r}")
            try:
                augment = AugmentConfig.from_mapping(augment)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"data.augment: {err}") from err
        config = cls(
            type=kind,
            dataset=_choice("data.dataset", values["dataset"], DATASET_KINDS),
            train=_optional_path("data.train", values["train"]),
            data_root=_optional_path("data.data_root", values["data_root"]),
            depth_root=_optional_path("data.depth_root", values["depth_root"]),
            val=_bags_or_path("data.val", values["val"], bag),
            val_root=_optional_path("data.val_root", values["val_root"]),
            val_depth_root=_optional_path("data.val_depth_root", values["val_depth_root"]),
            val_fraction=None
            if fraction is None
            else _number("data.val_fraction", fraction, 0, 1, low_open=True, high_open=True),
            test=_bags_or_path("data.test", values["test"], bag),
            test_root=_optional_path("data.test_root", values["test_root"]),
            test_depth_root=_optional_path("data.test_depth_root", values["test_depth_root"]),
            num_workers=_integer("data.num_workers", values["num_workers"], 0, 256),
            augment=augment,
            val_max_samples=_optional_integer("data.val_max_samples", values["val_max_samples"], 1),
            bags=_bag_list("data.bags", values["bags"]) if bag else None,
            image_topic=_text("data.image_topic", values["image_topic"]) if bag else None,
            depth_topic=_optional_text("data.depth_topic", values["depth_topic"]),
            anchor_topic=_optional_text("data.anchor_topic", values["anchor_topic"]),
            camera_info_topic=_optional_text("data.camera_info_topic", values["camera_info_topic"]),
            focal=None
            if values["focal"] is None
            else _number("data.focal", values["focal"], 0, 1e6, low_open=True),
            slop_ms=_number("data.slop_ms", values["slop_ms"], 0, MAX_SLOP_MS),
            stride=_integer("data.stride", values["stride"], 1),
            segment_s=_number(
                "data.segment_s", values["segment_s"], 0, MAX_SEGMENT_S, low_open=True
            ),
            cache_dir=_optional_path("data.cache_dir", values["cache_dir"]),
        )
        if bag:
            if config.train is not None:
                raise ConfigError("data.train is for image datasets; give bags in data.bags")
            for key in ("depth_topic", "anchor_topic"):
                if config.image_topic == getattr(config, key):
                    raise ConfigError(
                        f"data.image_topic and data.{key} are both {config.image_topic}"
                    )
        elif config.train is None:
            raise ConfigError("data.train must name the training data (a list file or directory)")
        return config

    def roots(self, key: str) -> tuple[str | None, str | None]:
        """(image root, depth root) of ``data.<key>`` (train, val or test)."""
        if key == "train":
            return self.data_root, self.depth_root
        return getattr(self, f"{key}_root"), getattr(self, f"{key}_depth_root")


def _bag_list(key: str, value: Any) -> tuple[str, ...]:
    paths = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(paths, (list, tuple)) or not paths:
        raise ConfigError(f"{key} must be a bag path or a list of them, got {value!r}")
    return tuple(_path(key, p) for p in paths)


def _bags_or_path(key: str, value: Any, bag: bool) -> Any:
    """data.val / data.test: bags (a tuple) with data.type: bag, else one dataset path."""
    if value is None:
        return None
    return _bag_list(key, value) if bag else _path(key, value)


@dataclass(frozen=True)
class OptimConfig:
    """``optim.*``: optimizer, learning-rate schedule, batch, steps, precision, EMA."""

    lr_new: float
    lr_backbone: float
    weight_decay: float
    batch_size: int
    epochs: int
    max_steps: int | None
    warmup_steps: int
    warmup_ratio: float | None
    min_lr_ratio: float
    schedule: str
    step_epochs: int
    step_gamma: float
    grad_clip: float
    amp: str
    ema_decay: float | None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> OptimConfig:
        ratio, ema = values["warmup_ratio"], values["ema_decay"]
        return cls(
            lr_new=_number("optim.lr_new", values["lr_new"], 0, 1),
            lr_backbone=_number("optim.lr_backbone", values["lr_backbone"], 0, 1),
            weight_decay=_number("optim.weight_decay", values["weight_decay"], 0, 1),
            batch_size=_integer("optim.batch_size", values["batch_size"], 1, 1_000_000),
            epochs=_integer("optim.epochs", values["epochs"], 1),
            max_steps=_optional_integer("optim.max_steps", values["max_steps"], 1),
            warmup_steps=_integer("optim.warmup_steps", values["warmup_steps"], 0),
            warmup_ratio=None
            if ratio is None
            else _number("optim.warmup_ratio", ratio, 0, 1, high_open=True),
            min_lr_ratio=_number("optim.min_lr_ratio", values["min_lr_ratio"], 0, 1),
            schedule=_choice("optim.schedule", values["schedule"], SCHEDULES),
            step_epochs=_integer("optim.step_epochs", values["step_epochs"], 1),
            step_gamma=_number("optim.step_gamma", values["step_gamma"], 0, 1, low_open=True),
            grad_clip=_number("optim.grad_clip", values["grad_clip"], 0, 1e30, low_open=True),
            amp=_choice("optim.amp", values["amp"], AMP_MODES),
            ema_decay=None
            if ema is None
            else _number("optim.ema_decay", ema, 0, 1, low_open=True, high_open=True),
        )


@dataclass(frozen=True)
class EvalConfig:
    """``eval.*``: validation cadence, protocol and depth range, model selection, flip TTA."""

    every_steps: int
    protocol: str
    min_depth: float | None
    max_depth: float | None
    select_metric: str
    select_on: str
    flip_tta: bool
    final_flip_tta: bool

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> EvalConfig:
        protocol = _choice("eval.protocol", values["protocol"], PROTOCOLS)
        low, high = values["min_depth"], values["max_depth"]
        for key, value in (("eval.min_depth", low), ("eval.max_depth", high)):
            if value is not None and not (_is_number(value) and 0 < value < math.inf):
                raise ConfigError(f"{key} must be a finite number > 0 (metres), got {value!r}")
        default_low, default_high = get_protocol(protocol).scored_range
        try:
            check_depth_range(
                default_low if low is None else low,
                default_high if high is None else high,
                f"eval.min_depth/max_depth (protocol {protocol})",
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
        return cls(
            every_steps=_integer("eval.every_steps", values["every_steps"], 1),
            protocol=protocol,
            min_depth=None if low is None else float(low),
            max_depth=None if high is None else float(high),
            select_metric=_choice("eval.select_metric", values["select_metric"], METRIC_NAMES),
            select_on=_choice("eval.select_on", values["select_on"], SELECT_ON),
            flip_tta=_flag("eval.flip_tta", values["flip_tta"]),
            final_flip_tta=_flag("eval.final_flip_tta", values["final_flip_tta"]),
        )


@dataclass(frozen=True)
class RunConfig:
    """``run.*``: the run directory, seed, device, logging and checkpoint cadence, --init."""

    out_dir: str
    seed: int
    device: str
    log_every: int
    image_every: int
    checkpoint_every: int
    max_bad_steps: int
    stop_after_steps: int | None
    init: str | None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        return cls(
            out_dir=_path("run.out_dir", values["out_dir"]),
            seed=_integer("run.seed", values["seed"], 0, MAX_SEED),
            device=_text("run.device", values["device"]),
            log_every=_integer("run.log_every", values["log_every"], 1),
            image_every=_integer("run.image_every", values["image_every"], 1),
            checkpoint_every=_integer("run.checkpoint_every", values["checkpoint_every"], 1),
            max_bad_steps=_integer("run.max_bad_steps", values["max_bad_steps"], 1),
            stop_after_steps=_optional_integer(
                "run.stop_after_steps", values["stop_after_steps"], 1
            ),
            init=_optional_path("run.init", values["init"]),
        )


@dataclass(frozen=True)
class DistillConfig:
    """``distill.*``: the teacher whose labels a bag run trains on (``teacher`` None: no
    distillation, the depth topic is the label), where and how it runs, and how its output is
    anchored to ``data.anchor_topic`` (the node's anchoring settings)."""

    teacher: str | None
    device: str
    precision: str
    batch_size: int
    anchor_mode: str
    anchor_smoothing: float
    anchor_min_points: int
    anchor_max_residual: float
    anchor_max_scale_factor: float
    anchor_max_scale_change: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DistillConfig:
        teacher = _optional_path("distill.teacher", values["teacher"])
        if teacher is None:
            stray = [k for k in DEFAULTS["distill"] if values[k] != DEFAULTS["distill"][k]]
            if stray:
                raise ConfigError(f"distill.{stray[0]} is set but distill.teacher is not")
        return cls(
            teacher=teacher,
            device=_text("distill.device", values["device"]),
            precision=_choice("distill.precision", values["precision"], PRECISIONS),
            batch_size=_integer("distill.batch_size", values["batch_size"], 1, 4096),
            anchor_mode=_choice("distill.anchor_mode", values["anchor_mode"], DISTILL_ANCHOR_MODES),
            anchor_smoothing=_anchor_number(values, "smoothing"),
            anchor_min_points=_integer(
                "distill.anchor_min_points",
                values["anchor_min_points"],
                *(int(v) for v in SETTING_RANGES["min_points"]),
            ),
            anchor_max_residual=_anchor_number(values, "max_residual"),
            anchor_max_scale_factor=_anchor_number(values, "max_scale_factor"),
            anchor_max_scale_change=_anchor_number(values, "max_scale_change"),
        )


def _anchor_number(values: Mapping[str, Any], name: str) -> float:
    """``distill.anchor_<name>`` within the range the anchoring core (and the node) accept."""
    return _number(f"distill.anchor_{name}", values[f"anchor_{name}"], *SETTING_RANGES[name])


def _check_distillation(data: DataConfig, distill: DistillConfig, run: RunConfig) -> None:
    """What the data and the teacher need of each other (one line naming the keys)."""
    teacher = distill.teacher
    if teacher is not None and data.type != "bag":
        raise ConfigError(
            "distill.teacher labels a robot's rosbags: set data.type: bag and data.bags"
        )
    if data.type != "bag":
        return
    if teacher is None and data.depth_topic is None:
        raise ConfigError(
            "data.depth_topic must name the bags' depth topic, or set distill.teacher to "
            "train on a teacher's labels of RGB-only bags"
        )
    if teacher is None and data.anchor_topic is not None:
        raise ConfigError(
            "data.anchor_topic metricizes a teacher's labels: set distill.teacher (or drop it)"
        )
    if teacher is not None and run.init is not None and Path(teacher) == Path(run.init):
        raise ConfigError(
            f"distill.teacher and --init are the same file ({teacher}): a model distilled "
            "into itself learns nothing; start from another checkpoint or from scratch"
        )


@dataclass(frozen=True)
class TrainingConfig:
    """A whole training config: typed sections, and the free-form model and loss settings."""

    model: dict[str, Any]
    data: DataConfig
    loss: dict[str, Any]
    optim: OptimConfig
    eval: EvalConfig
    run: RunConfig
    distill: DistillConfig

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrainingConfig:
        """The typed config of a merged config dict (``load_config``'s); ConfigError naming
        the first key whose value cannot be used."""
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown config key '{unknown[0]}'")
        typed = cls(
            model=_free_form("model", config.get("model", DEFAULTS["model"])),
            data=DataConfig.from_mapping(_section(config, "data")),
            loss=_free_form("loss", config.get("loss", DEFAULTS["loss"])),
            optim=OptimConfig.from_mapping(_section(config, "optim")),
            eval=EvalConfig.from_mapping(_section(config, "eval")),
            run=RunConfig.from_mapping(_section(config, "run")),
            distill=DistillConfig.from_mapping(_section(config, "distill")),
        )
        _check_distillation(typed.data, typed.distill, typed.run)
        return typed

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] = ()) -> TrainingConfig:
        """``load_config`` then ``from_dict``."""
        return cls.from_dict(load_config(path, overrides))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, dicts): what ``config.yaml`` and checkpoint metadata hold;
        ``from_dict(load_config(written))`` gives this config back."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            out[field.name] = _plain(value if field.name in _FREE_FORM else asdict(value))
        return out
