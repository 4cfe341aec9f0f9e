"""Guard rails of the layout (docs/architecture.md): imports point down, ROS stays in its layers.

Layers, bottom to top: base (version, errors, options) → models → core (checkpoint, estimator,
evaluation, ...) → msgs → node and bags; the training package sits beside node and bags and
uses models and core only.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "moa_depth_ros"
TRAINING = REPO / "moa_depth_train"
#: Markdown files the code writes (reports), not documents it refers to.
WRITTEN_MD = {"report.md"}
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "rcl_interfaces")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by ``path`` (anywhere, or only at import time)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


#: Modules every layer may use: the version, one-line errors, shared choices (no torch, no ROS).
BASE = {"moa_depth_ros", "moa_depth_ros.errors", "moa_depth_ros.options"}


def _layer(module: str) -> str:
    if module in BASE:
        return "base"
    parts = module.split(".")
    if parts[0] == "moa_depth_train":
        return "training"
    if len(parts) > 1 and parts[1] in ("models", "msgs", "node", "bags"):
        return parts[1]
    return "core"


#: What each layer may import from this repository.
ALLOWED = {
    "base": {"base"},
    "models": {"base", "models"},
    "core": {"base", "models", "core"},
    "msgs": {"base", "core", "msgs"},
    "node": {"base", "models", "core", "msgs", "node"},
    "bags": {"base", "models", "core", "msgs", "bags"},
    "training": {"base", "models", "core", "training"},
}


def test_nothing_in_the_package_imports_the_training_package() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _python_files(PACKAGE)
        for name in _imports(path)
        if name.split(".")[0] in ("moa_depth_train", "training")
    ]
    assert offenders == []


def test_imports_point_down_the_layers() -> None:
    offenders = []
    for path in _python_files(PACKAGE) + _python_files(TRAINING):
        here = _layer(_module_name(path))
        for name in _imports(path):
            if name.split(".")[0] not in ("moa_depth_ros", "moa_depth_train"):
                continue
            if _layer(name) not in ALLOWED[here]:
                offenders.append(f"{path.relative_to(REPO)} ({here}) imports {name}")
    assert offenders == []


def test_ros_is_imported_at_import_time_only_by_the_node_and_live_bag_tools() -> None:
    """Static check: top-level imports of rclpy and message packages."""
    allowed = ("moa_depth_ros.node", "moa_depth_ros.bags.live")
    offenders = []
    for path in _python_files(PACKAGE) + _python_files(TRAINING):
        module = _module_name(path)
        if module.startswith(allowed):
            continue
        ros = {n for n in _imports(path, top_level_only=True) if n.split(".")[0] in ROS_MODULES}
        if ros:
            offenders.append(f"{module}: {sorted(ros)}")
    assert offenders == []


@pytest.mark.slow
def test_offline_modules_import_without_loading_ros() -> None:
    """Dynamic check: importing every module outside the node and the live bag tools, in a
    fresh interpreter, never loads rclpy or a message package (also not indirectly)."""
    modules = [
        _module_name(p)
        for p in _python_files(PACKAGE) + _python_files(TRAINING)
        if not _module_name(p).startswith(("moa_depth_ros.node", "moa_depth_ros.bags.live"))
        and p.name != "__main__.py"
    ]
    script = (
        "import importlib, sys\n"
        f"ros = {ROS_MODULES!r}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ros)\n"
        "    if loaded:\n"
        "        print(f'{name} loaded {loaded}')\n"
        "        sys.exit(1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_documents_named_in_the_code_exist_in_the_repository() -> None:
    """Docstrings and docs point at files of this repository only (no dangling references)."""
    sources = _python_files(PACKAGE) + _python_files(TRAINING) + [REPO / "README.md"]
    sources += sorted((REPO / "docs").glob("*.md"))
    missing = []
    for path in sources:
        text = path.read_text()
        assert "shared/" not in text, f"{path.relative_to(REPO)} points outside the repository"
        for name in set(re.findall(r"\b([\w-]+\.md)\b", text)) - WRITTEN_MD:
            if not (REPO / "docs" / name).is_file() and not (REPO / name).is_file():
                missing.append(f"{path.relative_to(REPO)} names {name}")
    assert missing == []
