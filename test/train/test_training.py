"""The training package end to end on synthetic data: resume, NaN handling, outputs, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.options import model_config_with, parse_override
from moa_depth_ros.synthetic import write_synthetic_dataset
from moa_depth_train.cli import train as train_module
from moa_depth_train.cli.evaluate import main as evaluate_main
from moa_depth_train.config import TrainingConfig, load_config
from moa_depth_train.distributed import EpochSampler
from moa_depth_train.trainer import Trainer, TrainingAborted, TrainingInterrupted


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, num_frames=40, width=96, height=72, seed=3, num_scenes=4)
    return out


TINY = [
    "model.clip_model=ViT-T-32-test",
    "model.image_size=64",
    "model.num_bins=16",
    "model.adapter_dim=8",
    "model.gate_hidden=8",
]


def _overrides(synthetic, run_dir, val=None, **optim) -> list[str]:
    return [
        *TINY,
        f"data.train={synthetic / 'train_files.txt'}",
        f"data.val={val or synthetic / 'test_files.txt'}",
        "data.num_workers=0",
        "data.augment={border_crop: null, crop_size: null}",
        "optim.batch_size=4",
        "optim.max_steps=6",
        "optim.warmup_steps=2",
        "optim.lr_new=1e-3",
        "eval.every_steps=1000",
        "eval.protocol=none",
        "run.log_every=1",
        "run.image_every=2",
        "run.checkpoint_every=3",
        f"run.out_dir={run_dir}",
        *(f"optim.{k}={v}" for k, v in optim.items()),
    ]


def _config(synthetic, run_dir, *extra: str, **optim) -> TrainingConfig:
    return TrainingConfig.load("demo_synthetic", [*_overrides(synthetic, run_dir, **optim), *extra])


def _train_losses(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train"]["total"] for r in map(json.loads, lines) if "train" in r}


def test_config_overrides_and_unknown_keys():
    assert parse_override("optim.lr_new=3e-4") == (["optim", "lr_new"], 3e-4)
    assert model_config_with({"type": "x"}, ["num_bins=64"]) == {"type": "x", "num_bins": 64}
    with pytest.raises(ValueError, match="no '.'"):
        model_config_with({"type": "x"}, ["model.num_bins=64"])
    config = load_config("moa_depthclip_nyu", ["optim.batch_size=4"])
    assert config["optim"]["batch_size"] == 4
    assert config["optim"]["lr_new"] == 1e-4 and config["optim"]["lr_backbone"] == 1e-5
    assert config["optim"]["weight_decay"] == 0.01 and config["model"]["image_size"] == 224
    with pytest.raises(ValueError, match="'optim.lr_bogus'"):
        load_config(None, ["optim.lr_bogus=1"])


def test_epoch_sampler_is_seeded_skips_and_shards():
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(2)
    pairs = list(sampler)
    assert {epoch for epoch, _ in pairs} == {2}  # the dataset draws epoch 2's augmentation
    order = [index for _, index in pairs]
    assert sorted(order) == list(range(10)) and pairs == list(sampler)
    sampler.set_epoch(2, skip=4)
    assert [i for _, i in sampler] == order[4:] and len(sampler) == 6
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != order
    # Two ranks split every global batch: together they see what one process sees.
    ranks = [EpochSampler(10, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for rank in ranks:
        rank.set_epoch(2)
    zero, one = ([i for _, i in r] for r in ranks)
    assert zero == order[0::2] and one == order[1::2] and len(zero) == len(one) == 5


def test_resume_reproduces_the_uninterrupted_run(synthetic, tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir(), cut_dir.mkdir()
    Trainer(_config(synthetic, full_dir), full_dir, progress=False).run()

    interrupted = _config(synthetic, cut_dir, "run.stop_after_steps=3")
    Trainer(interrupted, cut_dir, progress=False).run()
    assert max(_train_losses(cut_dir)) == 3
    resumed = Trainer(_config(synthetic, cut_dir), cut_dir, resume=True, progress=False)
    assert resumed.step == 3
    resumed.run()

    full, cut = _train_losses(full_dir), _train_losses(cut_dir)
    assert sorted(full) == sorted(cut) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert cut[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7)
    assert full[4] != full[5]  # the losses really differ step to step


def test_outputs_checkpoint_and_tensorboard(synthetic, tmp_path):
    Trainer(_config(synthetic, tmp_path), tmp_path, progress=False).run()
    for name in ("last.safetensors", "best.safetensors", "state.pt", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    model, metadata = load_checkpoint(tmp_path / "last.safetensors")
    assert metadata["training"]["step"] == 6
    assert metadata["training"]["config"]["optim"]["batch_size"] == 4
    assert metadata["eval_metrics"]["count"] > 0 and "abs_rel" in metadata["eval_metrics"]
    assert metadata["dataset"]["train_samples"] > 0
    depth = (
        DepthEstimator(TorchBackend(model, "cpu")).predict(np.zeros((72, 96, 3), np.uint8)).depth
    )
    assert depth.shape == (72, 96) and np.isfinite(depth).all()


def test_nonfinite_steps_skipped_counted_then_abort(synthetic, tmp_path, monkeypatch):
    config = _config(synthetic, tmp_path, "run.max_bad_steps=3", max_steps=20)
    trainer = Trainer(config, tmp_path, progress=False)
    real_loss = trainer.loss_fn
    calls = {"n": 0}

    def sometimes_nan(output, gt):
        calls["n"] += 1
        terms = real_loss(output, gt)
        if calls["n"] == 2 or calls["n"] >= 4:
            terms["total"] = terms["total"] * torch.nan
        return terms

    trainer.loss_fn = sometimes_nan
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingAborted, match="3 consecutive steps"):
        trainer.run()
    assert trainer.bad_steps == 4  # step 2, then 4, 5, 6
    assert trainer.step == 6
    skipped = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in skipped if "skipped" in r] == [2, 4, 5, 6]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_skipped_steps_move_the_schedule_without_torch_warnings(synthetic, tmp_path):
    """A first step without a usable loss is skipped; the learning rate still follows the step
    count, and no torch scheduler is stepped before its optimizer (no raw torch warning)."""
    trainer = Trainer(_config(synthetic, tmp_path, max_steps=4), tmp_path, progress=False)
    real_loss, calls = trainer.loss_fn, {"n": 0}

    def nan_first(output, gt):
        calls["n"] += 1
        terms = real_loss(output, gt)
        if calls["n"] == 1:
            terms["total"] = terms["total"] * torch.nan
        return terms

    trainer.loss_fn = nan_first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert [str(w.message) for w in caught] == []
    records = _records(tmp_path)
    assert [r["step"] for r in records if "skipped" in r] == [1]
    # lr_new 1e-3, 2 warm-up steps of 4, cosine to min_lr_ratio 0.05: the rate after step s.
    lrs = {r["step"]: r["lr"]["new_modules"] for r in records if "lr" in r}
    assert lrs == pytest.approx({2: 1e-3, 3: 1e-3 * (0.05 + 0.95 * 0.5), 4: 1e-3 * 0.05})


def test_train_and_evaluate_clis(synthetic, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [
        f"--set=run.out_dir={run_dir}",
        f"--set=data.train={synthetic / 'train_files.txt'}",
        f"--set=data.val={synthetic / 'test_files.txt'}",
        "--set=optim.max_steps=2",
        "--set=optim.batch_size=4",
        "--set=model.clip_model=ViT-T-32-test",
        "--set=model.image_size=64",
        "--set=data.augment=null",
    ]
    config = "demo_synthetic"
    assert train_module.main(["--config", config, "--no-progress", *overrides]) == 0
    out = tmp_path / "eval"
    code = evaluate_main(
        [
            "--checkpoint",
            str(run_dir / "last.safetensors"),
            "--data",
            str(synthetic / "test_files.txt"),
            "--protocol",
            "none",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    test_frames = len((synthetic / "test_files.txt").read_text().split("\n")) - 1
    assert report["overall"]["count"] == test_frames > 0
    assert len(report["per_frame"]) == test_frames
    assert 0 < report["overall"]["abs_rel"] < 10
    assert report["settings"]["protocol"]["name"] == "none"
    assert (out / "samples.png").is_file() and (out / "per_frame_metrics.png").is_file()
    assert "| last |" in capsys.readouterr().out
    missing = ["--checkpoint", str(tmp_path / "nope.safetensors"), "--data", "x", "--out", "o"]
    assert evaluate_main(missing) == 2
    assert "nope.safetensors: checkpoint file not found" in capsys.readouterr().err


def _records(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sigint_saves_the_current_step_and_resume_is_exact(synthetic, tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir(), cut_dir.mkdir()
    Trainer(_config(synthetic, full_dir), full_dir, progress=False).run()

    trainer = Trainer(_config(synthetic, cut_dir), cut_dir, progress=False)
    real_loss, calls = trainer.loss_fn, {"n": 0}

    def interrupt_at_step_4(output, gt):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: handled after this step
        return real_loss(output, gt)

    trainer.loss_fn = interrupt_at_step_4
    # Python's default_int_handler, or SIG_IGN when the run was started in the background.
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 4"):
        trainer.run()
    assert signal.getsignal(signal.SIGINT) is handler_before  # the caller's handler restored
    resumed = Trainer(_config(synthetic, cut_dir), cut_dir, resume=True, progress=False)
    assert resumed.step == 4  # not the last checkpoint (step 3): the step it was stopped at
    resumed.run()
    steps = [r["step"] for r in _records(cut_dir) if "train" in r]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]  # no step logged twice
    full, cut = _train_losses(full_dir), _train_losses(cut_dir)
    for step in (5, 6):
        assert cut[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7)


def test_cli_exit_codes_for_interrupt_and_shorter_schedule(
    synthetic, tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    overrides = [f"--set={o}" for o in _overrides(synthetic, run_dir)]

    def kill_after_second_step(self, batch, real=Trainer._train_step):
        result = real(self, batch)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(Trainer, "_train_step", kill_after_second_step)
    assert train_module.main(["--config", "demo_synthetic", "--no-progress", *overrides]) == 143
    assert "SIGTERM at step 2; state saved" in capsys.readouterr().err
    monkeypatch.undo()
    shorter = ["--resume", str(run_dir), "--set=optim.max_steps=1", "--no-progress"]
    assert train_module.main(shorter) == 2
    err = capsys.readouterr().err.strip()
    assert "at step 2 but the schedule now has only 1 steps" in err and len(err.splitlines()) == 1
    assert train_module.main(["--resume", str(run_dir), "--no-progress"]) == 0


class _Exploit:
    """Unpickling this would create a file: what a crafted state.pt could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_state_that_would_run_code_is_refused(synthetic, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert (
        train_module.main(
            [
                "--config",
                "demo_synthetic",
                "--no-progress",
                *(f"--set={o}" for o in _overrides(synthetic, run_dir)),
            ]
        )
        == 0
    )
    marker = tmp_path / "pwned"
    state = torch.load(run_dir / "state.pt", weights_only=True)
    state["best"] = _Exploit(marker)
    torch.save(state, run_dir / "state.pt")
    assert train_module.main(["--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "state.pt: refusing to load" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_validation_with_its_own_root_and_a_failure_that_keeps_the_state(
    synthetic, tmp_path, capsys
):
    # The validation list lives elsewhere and names files relative to its own root.
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    lines = (synthetic / "test_files.txt").read_text().splitlines()
    (val_dir / "val.txt").write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    overrides = _overrides(synthetic, run_dir, val=val_dir / "val.txt")
    overrides += [f"data.val_root={synthetic}", "eval.every_steps=3"]
    assert (
        train_module.main(
            ["--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in overrides)]
        )
        == 0
    )
    assert any("val" in r for r in _records(run_dir))

    # Files a list names that are not there: refused before training, nothing written.
    broken = tmp_path / "broken"
    (val_dir / "missing.txt").write_text("nowhere/rgb_00000.jpg nowhere/sync_depth_00000.png\n")
    overrides = _overrides(synthetic, broken, val=val_dir / "missing.txt")
    args = ["--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in overrides)]
    assert train_module.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.txt" in err, err
    assert "no valid ground truth" in err and "1 unreadable: cannot read depth" in err
    assert not broken.exists()


def test_a_validation_failing_mid_run_keeps_the_state(synthetic, tmp_path, capsys, monkeypatch):
    # Validation files that vanish while the run trains (a network share, a cleanup job).
    val_root = tmp_path / "val_copy"
    shutil.copytree(synthetic, val_root)
    run_dir = tmp_path / "run"
    overrides = _overrides(synthetic, run_dir, val=val_root / "test_files.txt")
    overrides += [f"data.val_root={val_root}", "eval.every_steps=3"]

    def remove_after_step_2(self, batch, real=Trainer._train_step):
        if self.step == 1:
            shutil.rmtree(val_root)
        return real(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", remove_after_step_2)
    args = ["--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in overrides)]
    assert train_module.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test_files.txt" in err and "state saved" in err, err
    assert "failed at step 3" in err
    assert torch.load(run_dir / "state.pt", weights_only=True)["step"] == 3  # nothing lost


def test_val_fraction_holds_out_whole_scenes(synthetic, tmp_path):
    config = _config(synthetic, tmp_path, "data.val=null", "data.val_fraction=0.25")
    trainer = Trainer(config, tmp_path, progress=False)
    train_scenes = {trainer.train_set.scene(i) for i in range(len(trainer.train_set))}
    val_scenes = {trainer.val_set.scene(i) for i in range(len(trainer.val_set))}
    assert val_scenes and train_scenes and not train_scenes & val_scenes
    assert trainer.val_set.augment is None and trainer.train_set.augment is not None


def test_no_valid_ground_truth_is_refused_before_training_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "empty_depth"
    write_synthetic_dataset(data, num_frames=12, width=64, height=48, seed=1, num_scenes=3)
    for png in data.rglob("sync_depth_*.png"):
        cv2.imwrite(str(png), np.zeros((48, 64), np.uint16))
    run_dir = tmp_path / "runs" / "run"
    overrides = _overrides(data, run_dir) + ["run.max_bad_steps=2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = train_module.main(
            ["--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in overrides)]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"data.train ({data / 'train_files.txt'}): no valid ground truth" in err
    assert not (tmp_path / "runs").exists()  # no run directory, no config.yaml, no checkpoint
    assert [str(w.message) for w in caught] == []
    model = build_model(load_config("demo_synthetic", TINY)["model"], load_pretrained=False)
    checkpoint = save_checkpoint(model, tmp_path / "m.safetensors")
    assert evaluate_main(["--checkpoint", str(checkpoint), "--data", str(data / "test_files.txt"),
                          "--out", str(tmp_path / "e"), "--no-progress"]) == 1  # fmt: skip
    assert "no frame could be evaluated" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(synthetic, tmp_path):
    """torchrun with gloo on CPU: rank 0 alone writes; the loss curve equals the single-process
    run with batch 2×4 within tolerance (BatchNorm-free tiny MoA, no dropout)."""
    single, double = tmp_path / "single", tmp_path / "double"
    common = _overrides(synthetic, single, batch_size=8)
    assert (
        train_module.main(
            ["--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in common)]
        )
        == 0
    )
    overrides = _overrides(synthetic, double, batch_size=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 1000), "-m", "moa_depth_train.cli.train",
         "--config", "demo_synthetic", "--no-progress", *(f"--set={o}" for o in overrides)],
        env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    one, two = _train_losses(single), _train_losses(double)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5, 6]
    # Step 1 sees the same weights and samples; only SILog's per-rank vs pooled statistics
    # differ. Later steps also follow slightly different gradients for that reason.
    assert two[1] == pytest.approx(one[1], rel=2e-3)
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=2e-2), (step, one, two)
    train_records = [r for r in _records(double) if "train" in r]
    assert len(train_records) == 6  # one writer: no record twice
    _, metadata = load_checkpoint(double / "last.safetensors")
    assert metadata["training"]["processes"] == 2 and metadata["training"]["global_batch"] == 8
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())


def test_config_errors_are_one_line_and_exit_2(synthetic, tmp_path, capsys):
    cases = [
        (["--config", "no_such_config"], "neither a file nor a shipped config"),
        (["--config", "demo_synthetic", "--set", "optim.lr_bogus=1"], "'optim.lr_bogus'"),
        (["--config", "demo_synthetic", "--set", f"data.train={tmp_path / 'x.txt'}"], "data.train"),
        (["--resume", str(tmp_path / "nothing")], "not a run directory"),
    ]
    for argv, needle in cases:
        assert train_module.main([*argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_depthblip2_learned_bins_config_trains_only_the_bins(synthetic, tmp_path):
    config = TrainingConfig.load(
        "depthblip2_nyu_learned_bins",
        [
            "model.pretrained=none", "model.size=tiny", "model.temperature=0.05",
            f"data.train={synthetic / 'train_files.txt'}", f"data.data_root={synthetic}",
            "data.test=null", "data.num_workers=0", "optim.batch_size=4", "optim.max_steps=6",
            "optim.step_epochs=1", "optim.amp=none", f"run.out_dir={tmp_path}",
        ],
    )  # fmt: skip
    trainer = Trainer(config, tmp_path, progress=False)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("bin_mlp.") for n in trainable)
    before = trainer.model.bins().detach().clone()
    trainer.run()
    lrs = [r["lr"]["new_modules"] for r in _records(tmp_path) if "lr" in r]
    per_epoch = trainer.steps_per_epoch
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(
        1e-3 * 0.1 ** (6 // per_epoch)
    )
    assert not torch.equal(trainer.model.bins().detach(), before)
