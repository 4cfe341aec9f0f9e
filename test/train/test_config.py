"""The typed training config: every shipped config builds, values are checked once with errors
that name the key, and config.yaml round-trips."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from moa_depth_train.augment import AugmentConfig
from moa_depth_train.cli.train import main
from moa_depth_train.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    OptimConfig,
    RunConfig,
    TrainingConfig,
    load_config,
    shipped_configs,
)

#: What a shipped config needs from the user before it can run.
USER_SETS = {
    "moa_depthclip_bag": ["data.bags=[run1.mcap]"],
    "moa_depthclip_distill": ["data.bags=[run1.mcap]", "distill.teacher=teacher.safetensors"],
}


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_builds_and_round_trips_through_config_yaml(name, tmp_path):
    config = TrainingConfig.load(name, USER_SETS.get(name, []))
    assert isinstance(config.data, DataConfig) and isinstance(config.optim, OptimConfig)
    assert isinstance(config.eval, EvalConfig) and isinstance(config.run, RunConfig)
    written = tmp_path / "config.yaml"
    written.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert TrainingConfig.from_dict(load_config(written)) == config


def test_values_are_typed_and_normalized():
    config = TrainingConfig.load(
        "moa_depthclip_bag", ["data.bags=run1.mcap", "optim.max_steps=1e4", "data.val=[v.mcap]"]
    )
    assert config.data.bags == ("run1.mcap",) and config.data.val == ("v.mcap",)
    assert config.optim.max_steps == 10_000 and isinstance(config.optim.max_steps, int)
    assert config.data.augment == AugmentConfig(rotate_degrees=2.5, flip_prob=0.5, color_prob=0.5)
    assert TrainingConfig.load("demo_synthetic", ["data.augment=null"]).data.augment is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run.seed = 3  # type: ignore[misc]


BAG = ["data.type=bag", "data.train=null", "data.bags=[b.mcap]", "data.image_topic=/i",
       "data.depth_topic=/d"]  # fmt: skip


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([*BAG, "data.stride=0"], "data.stride must be >= 1, got 0"),
        ([*BAG, "data.stride=1.5"], "data.stride must be an integer, got 1.5"),
        ([*BAG, "data.stride=true"], "data.stride must be an integer, got True"),
        ([*BAG, "data.slop_ms=-1"], "data.slop_ms must be in [0, 1000], got -1"),
        ([*BAG, "data.slop_ms=.nan"], "data.slop_ms must be a finite number, got nan"),
        ([*BAG, "data.segment_s=1e30"], "data.segment_s must be in (0, 1e+06], got 1e+30"),
        ([*BAG, "data.focal=0"], "data.focal must be in (0, 1e+06], got 0"),
        ([*BAG, "data.depth_topic=/i"], "data.image_topic and data.depth_topic are both /i"),
        ([*BAG, "data.image_topic=null"], "data.image_topic must be a non-empty string"),
        ([*BAG[:2], "data.image_topic=/i", "data.depth_topic=/d"], "data.bags must be a bag"),
        ([*BAG, "data.train=x.txt"], "data.train is for image datasets"),
        (["data.stride=2"], "data.stride is set but data.type is 'files'"),
        (["data.type=pictures"], "data.type must be one of files, bag, got 'pictures'"),
        (["data.train=null"], "data.train must name the training data"),
        (["data.val_fraction=1"], "data.val_fraction must be in (0, 1), got 1"),
        (["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
        (["data.augment={flip: 1}"], "data.augment: unknown augmentation settings ['flip']"),
        (["optim.lr_new=.inf"], "optim.lr_new must be a finite number, got inf"),
        (["optim.lr_new=5e38"], "optim.lr_new must be in [0, 1], got 5e+38"),
        (["optim.batch_size=0"], "optim.batch_size must be >= 1, got 0"),
        (["optim.amp=fp8"], "optim.amp must be one of none, bf16, fp16, got 'fp8'"),
        (["optim.schedule=linear"], "optim.schedule must be one of warmup_cosine, step"),
        (["optim.ema_decay=1"], "optim.ema_decay must be in (0, 1), got 1"),
        (["optim.warmup_ratio=1"], "optim.warmup_ratio must be in [0, 1), got 1"),
        (["optim.grad_clip=0"], "optim.grad_clip must be in (0, 1e+30], got 0"),
        (["eval.select_on=train"], "eval.select_on must be one of val, test, got 'train'"),
        (["eval.protocol=nyu"], "eval.protocol must be one of"),
        (["eval.select_metric=loss"], "eval.select_metric must be one of abs_rel"),
        (["eval.min_depth=5", "eval.max_depth=1"], "eval.min_depth/max_depth (protocol none)"),
        (["eval.min_depth=20"], "need 0 < min_depth < max_depth, got min_depth 20, max_depth 10"),
        (["eval.max_depth=-1"], "eval.max_depth must be a finite number > 0 (metres), got -1"),
        (["eval.flip_tta=maybe"], "eval.flip_tta must be true or false, got 'maybe'"),
        (["eval.every_steps=0"], "eval.every_steps must be >= 1, got 0"),
        (["run.seed=-1"], "run.seed must be >= 0, got -1"),
        (["run.seed=4294967296"], "run.seed must be <= 4294967295"),
        (["run.max_bad_steps=0"], "run.max_bad_steps must be >= 1, got 0"),
        (["run.out_dir=null"], "run.out_dir must be a non-empty string, got None"),
        (["optim=3"], "config section 'optim' must be a mapping, got 3"),
        (["loss=hybrid"], "loss must be a mapping of settings, got 'hybrid'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(sets, message, tmp_path, capsys):
    with pytest.raises(ConfigError) as raised:
        TrainingConfig.load("demo_synthetic", sets)
    assert message in str(raised.value)
    # The command says the same in one line, exit 2, before anything is read or written.
    args = [f"--set={s}" for s in [*sets, f"run.out_dir={tmp_path / 'run'}"]]
    if "run.out_dir=null" in sets:
        args = [f"--set={s}" for s in sets]
    assert main(["--config", "demo_synthetic", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moa-depth-train: error: ") and message in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.num_bins=0"], "model: bad value for config key 'num_bins'"),
        (["model.type=resnet"], "model: bad value for config key 'type': 'resnet'"),
        (["loss.w_bogus=1"], "unknown config key 'loss.w_bogus' for loss type 'hybrid'"),
        (["loss.type=l2"], "loss.type must be one of hybrid, space_clip, mae_rmse, got 'l2'"),
    ],
)
def test_model_and_loss_settings_are_refused_before_any_data_is_read(
    sets, message, tmp_path, capsys
):
    missing = tmp_path / "no_such_list.txt"  # reading the data would fail differently
    args = [f"--set={s}" for s in [*sets, f"data.train={missing}", f"run.out_dir={tmp_path / 'r'}"]]
    assert main(["--config", "demo_synthetic", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "no_such_list" not in err, err
    assert not (tmp_path / "r").exists()
