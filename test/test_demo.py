"""``make demo`` (tools/demo.py): the quick pipeline end to end, and a failing stage named."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers.bags import REPO

DEMO = REPO / "tools" / "demo.py"


def _load_demo_module():
    spec = importlib.util.spec_from_file_location("demo_tool", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_demo(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO), "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


def test_median_training_depth_reads_the_list_file(tmp_path: Path) -> None:
    demo = _load_demo_module()
    (tmp_path / "room").mkdir()
    lines = []
    for index, millimetres in enumerate((1000, 2000, 4000)):
        depth = np.full((4, 4), millimetres, np.uint16)
        depth[0, 0] = 0  # invalid pixels do not count
        cv2.imwrite(str(tmp_path / "room" / f"d{index}.png"), depth)
        lines.append(f"/room/rgb{index}.jpg /room/d{index}.png 100.0")
    (tmp_path / "train_files.txt").write_text("\n".join(lines) + "\n")
    assert demo.median_training_depth(tmp_path / "train_files.txt") == pytest.approx(2.0)


@pytest.mark.slow
def test_quick_demo_beats_the_median_depth_baseline(tmp_path: Path) -> None:
    out = tmp_path / "demo_out"
    result, elapsed = _run_demo("--work", str(tmp_path), "--out", str(out), timeout=600)
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log
    print(f"quick demo: {elapsed:.0f} s")  # shown with -s; the CI target is < 180 s

    report = json.loads((out / "report.json").read_text())
    overall = report["overall"]
    (baseline,) = report["references"].values()
    counts = report["counts"]
    assert counts["ground_truth"] == 16
    assert counts["evaluated"] >= 8, counts  # some frames may drop on a busy machine
    assert overall["abs_rel"] < baseline["abs_rel"], log
    assert overall["rmse"] < baseline["rmse"], log
    assert overall["delta1"] > baseline["delta1"], log
    assert "model better than the baseline on abs_rel, rmse and delta1: yes" in result.stdout

    markdown = (out / "report.md").read_text()
    for picture in ("per_frame_metrics.png", "samples.png"):
        assert f"({picture})" in markdown and (out / picture).stat().st_size > 0
    header = (out / "cloud.ply").read_bytes().split(b"end_header\n")[0].decode()
    vertices = int(header.split("element vertex ")[1].split()[0])
    assert vertices > 0 and "property uchar red" in header
    assert (out / "bags" / "recorded" / "metadata.yaml").is_file()


@pytest.mark.slow
def test_demo_names_the_failed_stage(tmp_path: Path) -> None:
    """A corrupt checkpoint is reused as is; the node then fails to configure."""
    run_dir = tmp_path / "runs" / "demo_synthetic_quick"
    run_dir.mkdir(parents=True)
    (run_dir / "best.safetensors").write_bytes(b"not a checkpoint")
    result, _ = _run_demo("--work", str(tmp_path), "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 1
    assert "demo failed at stage 'node': exited with 1" in result.stderr
    assert "best.safetensors" in result.stderr  # the node's own reason, from its log
