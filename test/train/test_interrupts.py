"""Ctrl-C at every stage of the training commands: one line, exit 130, never a traceback, and
a half-decoded bag is never reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bag_helpers.bags import PERIOD, T0, write_messages
from test_bag_dataset import DEPTH, IMAGE, INFO, train_args, write_bag

from moa_depth_ros.bags import mcap_crc
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, image_message
from moa_depth_ros.synthetic import write_synthetic_dataset
from moa_depth_train import bag_decode, datasets, frame_labels, trainer
from moa_depth_train.cli import evaluate as evaluate_cli
from moa_depth_train.cli import import_space_clip as import_cli
from moa_depth_train.cli import prepare as prepare_cli
from moa_depth_train.cli import train as train_cli

REPO = Path(__file__).resolve().parents[2]
SETUP_LINE = "moa-depth-train: interrupted while setting up (data, bags, model); no run was started"


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _interrupt_on_call(number: int, real):
    """``real``, but Ctrl-C on its ``number``-th call (partway through a loop)."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    wrapped.calls = calls
    return wrapped


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _cache_entries(cache: Path) -> list[str]:
    """Everything in the bag cache but the hash memo: entries and half-written ones."""
    return (
        sorted(p.name for p in cache.iterdir() if p.name != "sha256.json") if cache.exists() else []
    )


@pytest.mark.parametrize(
    ("stage", "owner", "name", "call"),
    [
        ("bag verification", mcap_crc, "verify", 1),
        ("decoding", bag_decode, "_decode_depth", 4),
        ("cache flush", frame_labels.LabelWriter, "close", 1),
        ("model build", trainer, "build_model", 1),
    ],
)
def test_ctrl_c_while_setting_up_a_bag_run_is_one_line(
    tmp_path, capsys, monkeypatch, stage, owner, name, call
):
    bag = write_bag(tmp_path / "bag")
    monkeypatch.setattr(owner, name, _interrupt_on_call(call, getattr(owner, name)))
    capsys.readouterr()
    assert train_cli.main(train_args(tmp_path, [bag], run="runs/r")) == 130, stage
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == SETUP_LINE and not any("Traceback" in line for line in err), err
    # Only the per-bag line may come before it (the bag was read when the model was built).
    assert len(err) == (2 if stage == "model build" else 1), err
    assert not (tmp_path / "runs").exists()
    entries = _cache_entries(tmp_path / "cache")
    assert not [e for e in entries if e.endswith(".tmp")], entries  # no half-written entry left
    assert len(entries) == (1 if stage == "model build" else 0), entries


def test_ctrl_c_while_reading_an_image_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_frames=8, width=32, height=24, seed=0, num_scenes=2)
    monkeypatch.setattr(datasets, "read_list_file", _interrupt)
    sets = [f"data.train={data / 'train_files.txt'}", f"run.out_dir={tmp_path / 'run'}"]
    argv = ["--config", "demo_synthetic", "--no-progress", *(f"--set={s}" for s in sets)]
    assert train_cli.main(argv) == 130
    assert _one_line(capsys) == SETUP_LINE
    assert not (tmp_path / "run").exists()


def test_an_interrupted_decode_is_never_reused_the_next_run_decodes_afresh(
    tmp_path, capsys, monkeypatch
):
    bag = write_bag(tmp_path / "bag")
    interrupted = _interrupt_on_call(6, bag_decode._decode_depth)
    monkeypatch.setattr(bag_decode, "_decode_depth", interrupted)
    assert train_cli.main(train_args(tmp_path, [bag])) == 130
    assert _one_line(capsys) == SETUP_LINE
    assert interrupted.calls["n"] == 6 and _cache_entries(tmp_path / "cache") == []

    counting = _interrupt_on_call(0, bag_decode._decode_depth)  # counts, never interrupts
    monkeypatch.setattr(bag_decode, "_decode_depth", counting)
    assert train_cli.main(train_args(tmp_path, [bag])) == 0
    assert counting.calls["n"] == 10  # every depth message decoded again, none taken from before
    assert "bag bag: 10 pairs within 20 ms" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])


def _signal_during(monkeypatch, only_final_test: bool = False) -> None:
    """SIGINT (as Ctrl-C sends it) sent to this process while an evaluation runs."""
    real = trainer.evaluate_estimator

    def evaluate_then_ctrl_c(*args, **kwargs):
        if kwargs.get("source") or not only_final_test:  # the final test names its source
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_estimator", evaluate_then_ctrl_c)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, num_frames=24, width=48, height=36, seed=3, num_scenes=3)
    return out


def _files_args(synthetic: Path, run_dir: Path, *sets: str) -> list[str]:
    base = [
        "model.clip_model=ViT-T-32-test", "model.image_size=64", "model.num_bins=16",
        "model.adapter_dim=8", "model.gate_hidden=8", f"data.train={synthetic / 'train_files.txt'}",
        f"data.val={synthetic / 'test_files.txt'}", "data.num_workers=0", "data.augment=null",
        "optim.batch_size=4", "optim.max_steps=4", "optim.warmup_steps=1", "eval.every_steps=2",
        "eval.protocol=none", "run.log_every=1", "run.image_every=1000",
        f"run.out_dir={run_dir}", *sets,
    ]  # fmt: skip
    return ["--config", "demo_synthetic", "--no-progress", *(f"--set={s}" for s in base)]


def test_ctrl_c_during_validation_stops_at_once_and_resumes(
    synthetic, tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    _signal_during(monkeypatch)
    assert train_cli.main(_files_args(synthetic, run_dir)) == 130
    err = _one_line(capsys)
    assert err == (
        "moa-depth-train: interrupted by SIGINT at step 2 during validation; state saved, "
        "continue with --resume"
    )
    assert torch.load(run_dir / "state.pt", weights_only=True)["step"] == 2
    monkeypatch.undo()
    assert train_cli.main(["--resume", str(run_dir), "--no-progress"]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val" in r] == [4]  # the cut validation is not logged


def test_ctrl_c_during_the_final_test_stops_and_resume_runs_it(
    synthetic, tmp_path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    args = _files_args(synthetic, run_dir, f"data.test={synthetic / 'test_files.txt'}")
    _signal_during(monkeypatch, only_final_test=True)
    assert train_cli.main(args) == 130
    assert _one_line(capsys) == (
        "moa-depth-train: interrupted by SIGINT at step 4 during the final test; state saved, "
        "continue with --resume"
    )
    assert (run_dir / "best.safetensors").is_file() and not (run_dir / "test_eval").exists()
    monkeypatch.undo()
    assert train_cli.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "test_eval" / "report.json").is_file()


def test_ctrl_c_in_the_other_training_commands_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate_cli, "load_estimator", _interrupt)
    argv = ["--checkpoint", "m.safetensors", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert evaluate_cli.main(argv) == 130
    assert _one_line(capsys) == "moa-depth-evaluate: interrupted"
    monkeypatch.setattr(prepare_cli, "download", _interrupt)
    assert (
        prepare_cli.main(["download", "http://127.0.0.1:9/x", "--out", str(tmp_path / "x")]) == 130
    )
    assert _one_line(capsys) == "moa-depth-prepare: interrupted"
    monkeypatch.setattr(import_cli, "convert", _interrupt)
    assert import_cli.main(["--reference", "r.pt", "--out", str(tmp_path / "s")]) == 130
    assert _one_line(capsys) == "moa-depth-import-space-clip: interrupted"


def _long_bag(path: Path, count: int) -> Path:
    """``count`` tiny frames: a bag whose decoding takes a second or more (per-message cost)."""
    messages = []
    rgb = np.zeros((24, 32, 3), np.uint8)
    depth = np.full((24, 32), 1500, np.uint16)
    info = {"fx": 64.0, "fy": 64.0, "cx": 16.0, "cy": 12.0}
    for i in range(count):
        stamp = T0 + i * PERIOD
        rgb[..., 0] = i % 256
        messages += [
            (IMAGE, stamp, image_message(rgb, stamp, "cam")),
            (INFO, stamp, camera_info_message(info, 32, 24, stamp, "cam")),
            (DEPTH, stamp, image_message(depth, stamp, "cam")),
        ]
    write_messages(path, messages)
    return path


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_real_sigint_while_a_bag_is_decoded(tmp_path):
    """The command in its own process, Ctrl-C's SIGINT sent once the decode pass writes the
    frame cache: exit 130, one line, and nothing half-written left in the cache."""
    bag = _long_bag(tmp_path / "long", 12_000)
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "moa_depth_train.cli.train", *train_args(tmp_path, [bag])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C's default action, even when the test runs with SIGINT ignored (in background).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not list(cache.glob(".long-*.tmp/images.npy")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the decode never started"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip() == SETUP_LINE, err
    assert _cache_entries(cache) == []
    assert not (tmp_path / "run").exists()
