"""The moa_depth_ros commands (moa_depth_ros.cli): options checked before work starts, one line
and a non-zero exit for a user's mistake or Ctrl-C, and outputs where the user asked for them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from moa_depth_ros.bags.io import BagReader
from moa_depth_ros.cli import bag, checkpoint, export, synthetic
from moa_depth_ros.errors import EXIT_INTERRUPTED
from moa_depth_ros.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    from conftest import TINY_DEPTHCLIP

    from moa_depth_ros.models import build_model

    return save_checkpoint(build_model(TINY_DEPTHCLIP).eval(), tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quantize", "int8", "--max-abs-rel", "-1"], "--max-abs-rel must be a positive number"),
        (["--quantize", "int8", "--max-abs-rel", "nan"], "--max-abs-rel must be a positive number"),
        (["--quantize", "int8", "--max-abs-rel", "inf"], "--max-abs-rel must be a positive number"),
        (["--quantize", "int8", "--calibration-frames", "0"], "--calibration-frames must be >= 1"),
        (["--quantize", "fp16", "--max-abs-rel", "nan"], "--max-abs-rel applies only to --quant"),
        (["--quantize", "fp16", "--calibration-frames", "-1"], "--calibration-frames applies only"),
        (["--calibration", "synthetic"], "--calibration applies only to --quantize int8"),
        (["--int8-for", "openvino"], "--int8-for applies only to --quantize int8"),
        (["--batch", "0"], "--batch must be a positive integer or 'dynamic', got '0'"),
        (["--batch", "two"], "--batch must be a positive integer or 'dynamic', got 'two'"),
        (["--input-size", "0", "64"], "--input-size must be positive"),
    ],
)
def test_export_refuses_nonsense_options_before_loading_anything(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkpoint that does not exist: an option error must come first, before any loading.
    argv = ["--checkpoint", str(tmp_path / "absent.safetensors"), "--out", str(tmp_path / "m.onnx")]
    assert export.main([*argv, *extra]) == 2
    assert message in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_export_names_out_when_its_folder_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "m.onnx"
    assert export.main(["--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert f"--out {out}: cannot write to its folder {blocker}" in err
    # Root ignores permission bits, so a read-only folder is simulated where the probe writes.
    denied = PermissionError(13, "Permission denied", str(tmp_path / ".m.onnx.tmpabc"))
    with mock.patch("tempfile.TemporaryFile", side_effect=denied):
        assert export.main(["--out", str(tmp_path / "m.onnx")]) == 2
    err = _one_error_line(capsys)
    assert f"--out {tmp_path / 'm.onnx'}: cannot write to its folder" in err
    assert "Permission denied" in err and ".tmpabc" not in err
    with mock.patch("tempfile.TemporaryFile", side_effect=denied):
        assert export.main(["--out", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys)


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KeyboardInterrupt anywhere under a command's main (here: while loading the model, while
    writing a bag, while rendering) ends it with one line and the SIGINT exit status."""
    with mock.patch.object(export, "load_or_zero_shot", side_effect=KeyboardInterrupt):
        code = export.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "x")])
    assert code == EXIT_INTERRUPTED
    assert _one_error_line(capsys) == "moa-depth-export: interrupted"

    with mock.patch("moa_depth_ros.bags.demo.render_sequence", side_effect=KeyboardInterrupt):
        code = bag.main(
            ["make-demo", "--out", str(tmp_path / "d"), "--frames", "2", "--no-progress"]
        )
    assert code == EXIT_INTERRUPTED
    assert _one_error_line(capsys) == "moa-depth-bag: interrupted"

    with mock.patch.object(synthetic, "write_synthetic_dataset", side_effect=KeyboardInterrupt):
        assert synthetic.main(["--out", str(tmp_path / "s"), "--frames", "1"]) == EXIT_INTERRUPTED
    assert _one_error_line(capsys) == "moa-depth-synthetic: interrupted"

    with mock.patch("moa_depth_ros.models.build_model", side_effect=KeyboardInterrupt):
        code = checkpoint.main(["--type", "depthclip", "--out", str(tmp_path / "c.safetensors")])
    assert code == EXIT_INTERRUPTED
    assert _one_error_line(capsys) == "moa-depth-checkpoint: interrupted"


def test_a_real_sigint_while_rendering_prints_one_line(tmp_path: Path) -> None:
    """The installed command's process, interrupted by the signal a terminal sends."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "moa_depth_ros.cli.synthetic", "--out", str(tmp_path / "s"),
         "--frames", "100000", "--width", "64", "--height", "48"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any((tmp_path / "s").glob("*/rgb_*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.1)  # rendering has started
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1] == "moa-depth-synthetic: interrupted"
    assert "Traceback" not in err


def test_synthetic_options_out_of_range_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra, message in [
        (["--frames", "0"], "num_frames must be ≥ 1"),
        (["--width", "0"], "width and height must be ≥ 1 px"),
        (["--test-fraction", "nan"], "test_fraction must be in [0, 1)"),
        (["--test-fraction", "1"], "test_fraction must be in [0, 1)"),
        (["--scenes", "-2"], "num_scenes must be ≥ 1"),
    ]:
        assert synthetic.main(["--out", str(tmp_path / "s"), *extra]) == 2
        assert message in _one_error_line(capsys)


@pytest.mark.parametrize(("name", "storage"), [("demo.mcap", "mcap"), ("demo.db3", "sqlite3")])
def test_make_demo_out_with_a_file_suffix_writes_that_one_file(
    name: str, storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    argv = ["make-demo", "--out", str(out), "--frames", "2", "--width", "16", "--height", "12"]
    assert bag.main([*argv, "--storage", storage, "--no-progress"]) == 0
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no directory, no leftovers
    with BagReader(out) as reader:
        assert reader.topics()["/camera/image_raw"].count == 2
    capsys.readouterr()
    assert bag.main([*argv, "--storage", storage, "--no-progress"]) == 2  # never overwritten
    assert "exists already" in _one_error_line(capsys)
    other = "sqlite3" if storage == "mcap" else "mcap"
    assert bag.main([*argv[:2], str(tmp_path / f"x{out.suffix}"), *argv[3:], "--storage", other,
                     "--no-progress"]) == 2  # fmt: skip
    assert f"a {out.suffix} file is not {other} storage" in _one_error_line(capsys)


def test_progress_off_a_terminal_is_a_line_every_few_seconds() -> None:
    """Written to a file (a launch log, CI), a bar of 2000 updates that redraws at each (a
    loss in its postfix) is a handful of plain lines, not one line of carriage returns; the
    last says it finished."""
    import io

    from moa_depth_ros.progress import progress_bar

    log = io.StringIO()
    with progress_bar(total=2000, desc="work", unit="it", stream=log) as bar:
        for step in range(2000):
            bar.update()
            bar.set_postfix(loss=f"{1 / (step + 1):.4f}")  # redraws every step
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines
    assert lines[-1].startswith("work: 100%") and "2000/2000" in lines[-1]
    assert len(text) < 500
    # A nested bar (an evaluation inside training) adds no cursor-move lines to a log.
    log = io.StringIO()
    with progress_bar(total=2, desc="outer", stream=log) as outer:
        for _ in progress_bar(range(3), desc="inner", stream=log, leave=False):
            pass
        outer.update(2)
    assert "\x1b" not in log.getvalue() and "[A" not in log.getvalue()
    with mock.patch("moa_depth_ros.progress.LOG_INTERVAL", 0.0):
        log = io.StringIO()
        with progress_bar(total=3, desc="fast", stream=log, mininterval=0.0) as bar:
            for _ in range(3):
                bar.update()
    assert [line.split("|")[0] for line in log.getvalue().splitlines()] == [
        "fast:   0%", "fast:  33%", "fast:  67%", "fast: 100%"
    ]  # fmt: skip
