"""What robots run: ROS 2 Humble (Python 3.10) and Jazzy (3.12). The suite must run in a sourced
ROS 2 workspace, and no code may need a Python newer than 3.10 (make lint checks it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fake_ros_site(root: Path) -> Path:
    """A site directory like a sourced ROS 2 workspace's: launch_testing 3.7.1's and
    launch_testing_ros's pytest plugins, found by their ``pytest11`` entry points. Their hooks
    have the signatures of the real ones, which pytest 9 rejects (py.path ``path`` arguments;
    a hook only launch_testing declares)."""
    site = root / "site"
    site.mkdir()
    (site / "fake_launch_testing_hooks.py").write_text(
        "def pytest_pycollect_makemodule(path, parent):\n    return None\n"
    )
    (site / "fake_launch_testing_ros_hooks.py").write_text(
        "def pytest_launch_collect_makemodule(path, parent, entrypoint):\n    return None\n"
    )
    for name, entry, module in [
        ("launch_testing", "launch_testing", "fake_launch_testing_hooks"),
        ("launch_testing_ros", "launch_ros", "fake_launch_testing_ros_hooks"),
    ]:
        info = site / f"{name}-3.7.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 3.7.1\n")
        (info / "entry_points.txt").write_text(f"[pytest11]\n{entry} = {module}\n")
    return site


def _pytest(site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra,
         "test/test_geometry.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_suite_runs_with_launch_testings_plugins_on_the_path(tmp_path: Path) -> None:
    site = _fake_ros_site(tmp_path)
    # Without the project's options the fake plugins break pytest, as the real ones do...
    broken = _pytest(site, "-o", "addopts=")
    assert broken.returncode != 0
    assert "PluginValidationError" in broken.stdout + broken.stderr
    # ...with them (pyproject.toml, used by make test and a plain pytest) the tests run.
    ok = _pytest(site)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert " passed" in ok.stdout


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        (
            "import hashlib\nwith open('f', 'rb') as f:\n    hashlib.file_digest(f, 'sha256')\n",
            True,
        ),
        ("import tomllib\n", True),
        ("import hashlib\nhashlib.sha256(b'x').hexdigest()\n", False),
    ],
)
def test_the_lint_version_check_catches_calls_newer_than_python_3_10(
    source: str, flagged: bool, tmp_path: Path
) -> None:
    """The vermin command of make lint, on a file that needs 3.11 and one that does not."""
    makefile = (REPO / "Makefile").read_text()
    command = next(line.strip() for line in makefile.splitlines() if "vermin " in line)
    arguments = command.split()[1:]
    arguments = [a for a in arguments if not a.startswith(("moa_", "bench", "test", "tools"))]
    arguments = [a for a in arguments if a != "launch"]
    (tmp_path / "sample.py").write_text(source)
    vermin = Path(sys.executable).parent / "vermin"
    result = subprocess.run(
        [str(vermin), *arguments, str(tmp_path / "sample.py")], capture_output=True, text=True
    )
    assert (result.returncode != 0) == flagged, result.stdout + result.stderr
