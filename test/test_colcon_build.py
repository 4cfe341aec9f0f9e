"""``colcon build`` of the package in a scratch workspace, as on a ROS 2 machine.

colcon comes from PyPI (requirements/dev.txt); the ament_python build only needs setup.py,
setup.cfg and package.xml. The test copies the package into ``<tmp>/src`` (no .venv, no tests),
builds it, checks the installed layout that ``ros2 run``/``ros2 launch`` rely on,
and runs the installed ``depth_node`` script against a missing checkpoint to prove the
installed copy (not the checkout) starts and fails cleanly.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).with_name("colcon")
PACKAGE = "moa_depth_ros"
PACKAGE_FILES = ("setup.py", "setup.cfg", "package.xml", "resource", PACKAGE, "moa_depth_train",
                 "launch", "config", "rviz")  # fmt: skip


@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not COLCON.exists():
        pytest.skip(f"colcon is not installed next to {sys.executable}")
    workspace = tmp_path_factory.mktemp("colcon_ws")
    source = workspace / "src" / PACKAGE
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    result = subprocess.run(
        [str(COLCON), "build", "--event-handlers", "console_direct-"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return workspace / "install" / PACKAGE


def test_colcon_installs_the_node_and_its_share_files(install_prefix: Path) -> None:
    assert (install_prefix / "share/ament_index/resource_index/packages" / PACKAGE).is_file()
    share = install_prefix / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "depth.launch.py").is_file()
    assert (share / "config" / "depth.yaml").is_file()
    assert (share / "rviz" / "depth.rviz").is_file()
    for name in ("depth_node", "moa-depth-bag", "moa-depth-train", "moa-depth-evaluate"):
        script = install_prefix / "lib" / PACKAGE / name
        assert script.is_file() and os.access(script, os.X_OK), name
    site_packages = next((install_prefix / "lib").glob("python3*/site-packages"))
    assert (site_packages / "moa_depth_train" / "configs" / "demo_synthetic.yaml").is_file()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_installed_depth_node_runs_from_the_install_space(
    install_prefix: Path, tmp_path: Path
) -> None:
    site_packages = next((install_prefix / "lib").glob("python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site_packages), HF_HUB_OFFLINE="1",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(tmp_path),
               ROS_DOMAIN_ID=str(random.randint(1, 200)))  # fmt: skip
    where = subprocess.run(
        [sys.executable, "-c", "import moa_depth_ros.node as m; print(m.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site_packages)), where.stdout
    missing = tmp_path / "no_such_model.safetensors"
    result = subprocess.run(
        [str(install_prefix / "lib" / PACKAGE / "depth_node"), "--ros-args", "-p",
         f"checkpoint:={missing}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(missing) in result.stderr and "checkpoint file not found" in result.stderr
