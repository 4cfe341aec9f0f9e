"""The training package end to end on synthetic data: resume, NaN handling, outputs, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moa_depth_ros.checkpoint import load_checkpoint
from moa_depth_ros.estimator import DepthEstimator
from moa_depth_ros.synthetic import write_synthetic_dataset
from moa_depth_train import train as train_module
from moa_depth_train.config import load_config, parse_override
from moa_depth_train.evaluate import main as evaluate_main
from moa_depth_train.train import EpochSampler, Trainer, TrainingAborted, warmup_cosine


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, num_frames=40, width=96, height=72, seed=3, num_scenes=4)
    return out


def _config(synthetic, run_dir, **optim) -> dict:
    overrides = [
        "model.clip_model=ViT-T-32-test",
        "model.image_size=64",
        "model.num_bins=16",
        "model.adapter_dim=8",
        "model.gate_hidden=8",
        f"data.train={synthetic / 'train_files.txt'}",
        f"data.val={synthetic / 'test_files.txt'}",
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
    return load_config("demo_synthetic", overrides)


def _train_losses(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train"]["total"] for r in map(json.loads, lines) if "train" in r}


def test_config_overrides_and_unknown_keys():
    assert parse_override("optim.lr_new=3e-4") == (["optim", "lr_new"], 3e-4)
    config = load_config("moa_depthclip_nyu", ["optim.batch_size=4"])
    assert config["optim"]["batch_size"] == 4
    assert config["optim"]["lr_new"] == 1e-4 and config["optim"]["lr_backbone"] == 1e-5
    assert config["optim"]["weight_decay"] == 0.01 and config["model"]["image_size"] == 224
    with pytest.raises(ValueError, match="'optim.lr_bogus'"):
        load_config(None, ["optim.lr_bogus=1"])


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup=4, total=14, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert factor(14) == pytest.approx(0.1) and factor(100) == pytest.approx(0.1)


def test_epoch_sampler_is_seeded_and_skips():
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(2)
    order = list(sampler)
    assert sorted(order) == list(range(10)) and order == list(sampler)
    sampler.set_epoch(2, skip=4)
    assert list(sampler) == order[4:] and len(sampler) == 6
    sampler.set_epoch(3)
    assert list(sampler) != order


def test_resume_reproduces_the_uninterrupted_run(synthetic, tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir(), cut_dir.mkdir()
    Trainer(_config(synthetic, full_dir), full_dir, progress=False).run()

    interrupted = _config(synthetic, cut_dir)
    interrupted["run"]["stop_after_steps"] = 3
    Trainer(interrupted, cut_dir, progress=False).run()
    assert max(_train_losses(cut_dir)) == 3
    interrupted["run"]["stop_after_steps"] = None
    resumed = Trainer(interrupted, cut_dir, resume=True, progress=False)
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
    depth = DepthEstimator(model, device="cpu").predict(np.zeros((72, 96, 3), np.uint8)).depth
    assert depth.shape == (72, 96) and np.isfinite(depth).all()


def test_nonfinite_steps_skipped_counted_then_abort(synthetic, tmp_path, monkeypatch):
    trainer = Trainer(_config(synthetic, tmp_path, max_steps=20), tmp_path, progress=False)
    real_loss = trainer.loss_fn
    calls = {"n": 0}

    def sometimes_nan(output, gt):
        calls["n"] += 1
        terms = real_loss(output, gt)
        if calls["n"] == 2 or calls["n"] >= 4:
            terms["total"] = terms["total"] * torch.nan
        return terms

    trainer.loss_fn = sometimes_nan
    trainer.cfg["run"]["max_bad_steps"] = 3
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingAborted, match="3 consecutive steps"):
        trainer.run()
    assert trainer.bad_steps == 4  # step 2, then 4, 5, 6
    assert trainer.step == 6
    skipped = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in skipped if "skipped" in r] == [2, 4, 5, 6]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


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
