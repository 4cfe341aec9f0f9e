"""A non-editable install works from any directory: make-demo, the training CLI, the node.

``pip install --no-deps --target`` copies both packages (``moa_depth_ros``, ``moa_depth_train``)
into a scratch directory, reusing the venv's dependencies; the commands then run from another
directory with only that copy on the path, as for a user who installed the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("pip_install")
    target = root / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the installed copy: no repository root on the path (the Makefile exports one).
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    return target, env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_installed_copy_is_the_one_imported(installed, tmp_path: Path) -> None:
    target, env = installed
    script = "import moa_depth_ros as a, moa_depth_train as b; print(a.__file__, b.__file__)"
    result = _run([sys.executable, "-c", script], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(path.startswith(str(target)) for path in result.stdout.split()), result.stdout


def test_make_demo_writes_a_bag_outside_the_repository(installed, tmp_path: Path) -> None:
    target, env = installed
    bag = tmp_path / "demo.mcap"
    command = [str(target / "bin" / "moa-depth-bag"), "make-demo", "--out", str(bag),
               "--frames", "3", "--width", "32", "--height", "24", "--no-progress"]  # fmt: skip
    result = _run(command, env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote 9 messages (3 frames" in result.stdout
    info = _run([str(target / "bin" / "moa-depth-bag"), "info", str(bag)], env, tmp_path)
    assert "/camera/depth/ground_truth" in info.stdout and "3 msgs" in info.stdout


def test_training_cli_and_shipped_configs_work_outside_the_repository(installed, tmp_path):
    target, env = installed
    help_text = _run([str(target / "bin" / "moa-depth-train"), "--help"], env, tmp_path)
    assert help_text.returncode == 0 and "--config" in help_text.stdout
    evaluate = _run([sys.executable, "-m", "moa_depth_train.cli.evaluate", "--help"], env, tmp_path)
    assert evaluate.returncode == 0 and "--protocol" in evaluate.stdout
    script = (
        "from moa_depth_train.config import load_config;"
        "print(load_config('demo_synthetic')['model']['clip_model'])"
    )
    result = _run([sys.executable, "-c", script], env, tmp_path)
    assert result.stdout.strip() == "ViT-T-16-demo", result.stderr


def test_every_installed_command_names_itself_in_its_help(installed, tmp_path: Path) -> None:
    """All nine commands are installed, and --help shows the name a user typed."""
    target, env = installed
    commands = sorted(p.name for p in (target / "bin").iterdir())
    assert commands == [
        "depth_node", "moa-depth-bag", "moa-depth-checkpoint", "moa-depth-evaluate",
        "moa-depth-export", "moa-depth-import-space-clip", "moa-depth-prepare",
        "moa-depth-synthetic", "moa-depth-train",
    ]  # fmt: skip
    for name in commands:
        if name == "depth_node":  # a ROS node: its arguments are ROS arguments
            continue
        result = _run([str(target / "bin" / name), "--help"], env, tmp_path)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"usage: {name} "), f"{name}: {result.stdout[:80]}"
