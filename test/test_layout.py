"""Guard rails of the layout (docs/architecture.md): imports point down, ROS stays in its layers.

Layers are folders. Bottom to top: base (version, errors, options) → core (the package's
top-level numpy modules: geometry, synthetic, visualize, ply) → models, evaluation, msgs →
inference → node, bags → cli (the installed commands); the training package sits beside node
and bags. No exemptions: a command obeys the layers like any module. No import circles.
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
#: Each folder of the package is a layer; its top-level modules (geometry, synthetic, ...) are
#: "core": numpy maths and data any layer may use.
FOLDERS = ("models", "inference", "evaluation", "msgs", "node", "bags", "cli")


def _layer(module: str) -> str:
    if module in BASE:
        return "base"
    parts = module.split(".")
    if parts[0] == "moa_depth_train":
        return "training"
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return "core"


#: What each layer may import from this repository (its own layer always).
ALLOWED = {
    "base": set(),
    "core": {"base"},
    "models": {"base", "core"},
    "evaluation": {"base", "core"},
    "msgs": {"base", "core"},
    "inference": {"base", "core", "models", "evaluation"},
    "node": {"base", "core", "models", "inference", "msgs"},
    "bags": {"base", "core", "models", "inference", "evaluation", "msgs"},
    "training": {"base", "core", "models", "inference", "evaluation", "msgs", "bags"},
    "cli": {"base", "core", "models", "inference", "evaluation", "msgs", "node", "bags"},
}


def _commands() -> set[str]:
    """Modules of the installed commands (setup.py console_scripts)."""
    text = (REPO / "setup.py").read_text()
    package = {"PACKAGE": "moa_depth_ros", "TRAINING": "moa_depth_train"}
    return {f"{package[var]}{rest}" for var, rest in re.findall(r"= \{(\w+)\}([\w.]*):main", text)}


def _import_graph() -> dict[str, set[str]]:
    """Module → the repository modules it imports anywhere (function-level imports too).
    ``from package import name`` points at the submodule when ``name`` is one."""
    modules = {_module_name(p): p for p in _python_files(PACKAGE) + _python_files(TRAINING)}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        edges.discard(module)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return circles


def test_no_import_circles() -> None:
    """No module reaches itself through imports, not even through imports inside functions."""
    assert _circles(_import_graph()) == []


def test_circle_finder_finds_a_circle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


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
    for module, imported in _import_graph().items():
        here = _layer(module)
        allowed = ALLOWED[here] | {here}
        offenders += [
            f"{module} ({here}) imports {name} ({_layer(name)})"
            for name in imported
            if _layer(name) not in allowed
        ]
    assert sorted(offenders) == []


def test_layer_check_catches_an_upward_import() -> None:
    """The check above is not vacuous: an inference module importing the bags is flagged, a
    command importing them is not."""
    assert _layer("moa_depth_ros.bags.io") not in ALLOWED[_layer("moa_depth_ros.inference.x")]
    assert _layer("moa_depth_ros.bags.io") in ALLOWED[_layer("moa_depth_ros.cli.export")]
    assert _layer("moa_depth_train.trainer") not in ALLOWED["cli"]


def test_the_commands_of_the_ros_package_live_in_its_cli_layer() -> None:
    """Every console script of moa_depth_ros is a module of ``moa_depth_ros.cli`` (the node's
    entry point is the node's own ``__main__``), so no command needs a layering exemption."""
    commands = _commands()
    assert "moa_depth_ros.cli.export" in commands  # the parser reads setup.py
    stray = [
        c
        for c in commands
        if c.startswith("moa_depth_ros.")
        and _layer(c) != "cli"
        and c != "moa_depth_ros.node.__main__"
    ]
    assert stray == []


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


def test_readme_is_short_links_the_topics_and_names_every_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for doc in ("deploy", "training", "evaluation", "multi_camera", "reliability", "benchmarks",
                "anchoring"):  # fmt: skip
        assert f"(docs/{doc}.md" in readme, doc
    # The methods table is one block: every model type is a row of it.
    table = re.search(r"^\| `type` \|.*?\n(?:\|.*\n)+", readme, re.MULTILINE)
    assert table is not None
    rows = {m for m in re.findall(r"^\| `(\w+)`", table.group(0), re.MULTILINE)} - {"type"}
    assert rows == {"moa_depthclip", "depthclip", "space_clip", "depthblip2", "hf_depth"}
    commands = re.findall(r'"([\w-]+) = \{', (REPO / "setup.py").read_text())
    assert len(commands) == 9
    assert [c for c in commands if f"| `{c}` |" not in readme] == []
    assert "ros2 run moa_depth_ros depth_node" in readme
    assert "ros2 run moa_depth_ros moa-depth-export" in readme
