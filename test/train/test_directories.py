"""Directories a config names: errors say which setting (run.out_dir, data.cache_dir, --out)
and what is wrong, in one line, before anything is read or written where possible."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from test_bag_dataset import train_args, write_bag

from moa_depth_train import directories, frame_labels, trainer
from moa_depth_train.cli import evaluate as evaluate_cli
from moa_depth_train.cli import train as train_cli
from moa_depth_train.directories import DirectoryError, check_writable_dir, make_dir


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("moa-depth-train: error: "), lines
    assert not any("Traceback" in line or "Errno" in line for line in lines), lines
    return lines[-1].removeprefix("moa-depth-train: error: ")


def test_check_and_make_name_the_setting_and_the_file_in_the_way(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for path in (blocker, blocker / "run"):
        with pytest.raises(DirectoryError) as raised:
            check_writable_dir(path, "run.out_dir")
        assert str(raised.value) == f"run.out_dir '{path}': '{blocker}' is a file, not a directory"
        with pytest.raises(DirectoryError) as raised:
            make_dir(path, "run.out_dir")
        assert str(raised.value) == f"run.out_dir '{path}': '{blocker}' is a file, not a directory"
    fresh = tmp_path / "new" / "run"
    assert check_writable_dir(fresh, "run.out_dir") == fresh and not fresh.parent.exists()
    assert make_dir(fresh, "run.out_dir").is_dir()


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    # Root ignores permission bits: the answer of access() (and of statvfs) is simulated.
    monkeypatch.setattr(directories.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(DirectoryError) as raised:
        check_writable_dir(tmp_path / "run", "run.out_dir")
    assert str(raised.value) == (
        f"run.out_dir '{tmp_path / 'run'}': permission denied (cannot create it in '{tmp_path}')"
    )

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(directories.os, "statvfs", lambda path: ReadOnly)
    with pytest.raises(DirectoryError, match=rf"^data.cache_dir '{tmp_path}': read-only file"):
        check_writable_dir(tmp_path, "data.cache_dir")
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    assert str(directories.setting_error("run.out_dir", tmp_path / "x", denied)) == (
        f"run.out_dir '{tmp_path / 'x'}': permission denied"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_for_real(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(DirectoryError, match="permission denied"):
            check_writable_dir(tmp_path / "run", "run.out_dir")
    finally:
        tmp_path.chmod(0o700)


def test_the_training_command_names_run_out_dir_and_data_cache_dir(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = train_args(tmp_path, [bag])
    assert train_cli.main([*args, f"--set=run.out_dir={blocker / 'run'}"]) == 2
    assert _error(capsys) == (
        f"run.out_dir '{blocker / 'run'}': '{blocker}' is a file, not a directory"
    )
    assert train_cli.main([*args, f"--set=data.cache_dir={blocker}"]) == 2
    assert _error(capsys) == f"data.cache_dir '{blocker}': '{blocker}' is a file, not a directory"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_a_full_disk_later_on_names_the_setting_too(tmp_path, capsys, monkeypatch):
    bag = write_bag(tmp_path / "bag")
    cache = tmp_path / "cache"

    def disk_full(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / "x.npy"))

    monkeypatch.setattr(frame_labels.LabelWriter, "close", disk_full)
    assert train_cli.main(train_args(tmp_path, [bag])) == 2
    message = _error(capsys)
    assert message.startswith(f"data.cache_dir '{cache}': no space left on device ({cache}/.bag-")
    assert message.endswith(".tmp/x.npy)")
    monkeypatch.undo()

    run_dir = tmp_path / "run"

    def state_disk_full(run, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "state.pt.tmp"))

    monkeypatch.setattr(trainer, "save_state", state_disk_full)
    assert train_cli.main(train_args(tmp_path, [bag])) == 2
    assert _error(capsys) == (
        f"run.out_dir '{run_dir}': no space left on device ({run_dir / 'state.pt.tmp'})"
    )


def test_evaluate_names_its_out(tmp_path, capsys, monkeypatch):
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint
    from moa_depth_ros.synthetic import write_synthetic_dataset
    from moa_depth_train.config import load_config

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_frames=4, width=32, height=24, seed=0, num_scenes=2)
    tiny = ["model.clip_model=ViT-T-32-test", "model.image_size=64", "model.num_bins=16",
            "model.adapter_dim=8", "model.gate_hidden=8"]  # fmt: skip
    model = build_model(load_config("demo_synthetic", tiny)["model"], load_pretrained=False)
    checkpoint = save_checkpoint(model, tmp_path / "m.safetensors")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    argv = ["--checkpoint", str(checkpoint), "--data", str(data / "test_files.txt"),
            "--protocol", "none", "--no-progress", "--out", str(blocker)]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"moa-depth-evaluate: error: --out '{blocker}': '{blocker}' is a file, not a directory"
    )
