"""launch/depth.launch.py, launch/multi_camera.launch.py and rviz/depth.rviz.

launch and launch_ros have no PyPI wheels (docs/ros.md): the launch description itself is built
only where launch_ros is importable (a ROS 2 install) and skipped elsewhere with that reason.
The static checks (syntax, declared arguments, remappings, RViz displays) run everywhere.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "depth.launch.py"
MULTI_CAMERA_LAUNCH_FILE = REPO / "launch" / "multi_camera.launch.py"
RVIZ_FILE = REPO / "rviz" / "depth.rviz"
REQUIRED_ARGUMENTS = {
    "namespace",
    "image_topic",
    "camera_info_topic",
    "params_file",
    "checkpoint",
    "device",
}
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None


def _expanded_node(launch_file: Path, configurations: dict[str, str]):
    """The LifecycleNode the launch file's OpaqueFunction returns for ``configurations``, with
    its substitutions performed, and the file's launch description."""
    from launch.actions import OpaqueFunction
    from launch_ros.actions import LifecycleNode

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location(launch_file.stem.replace(".", "_"), launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    [opaque] = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    context = LaunchContext()
    context.launch_configurations.update(configurations)
    [node] = [e for e in opaque.execute(context) if isinstance(e, LifecycleNode)]
    node._perform_substitutions(context)  # resolves name, namespace and remappings
    return node, description


def _string_args_of_calls(tree: ast.AST, function: str) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == function
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(node.args[0].value)
    return names


def test_launch_file_declares_the_arguments_and_remaps_inputs() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text(), str(LAUNCH_FILE))
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert set(_string_args_of_calls(tree, "DeclareLaunchArgument")) >= REQUIRED_ARGUMENTS
    remapped = {
        elt.elts[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "remappings"
        for elt in node.value.elts
    }
    # The node derives 'image/compressed' from 'image' itself (image_transport style).
    assert remapped == {"image", "camera_info", "metric_depth", "metric_points"}
    source = LAUNCH_FILE.read_text()
    assert 'executable="depth_node"' in source and "package=PACKAGE" in source
    # Overrides go through the tested pure function, after the params file.
    assert '[LaunchConfiguration("params_file"), parameter_overrides(given)]' in source


def test_overrides_only_for_arguments_the_user_gave() -> None:
    from moa_depth_ros.node.launch_args import parameter_overrides

    # Nothing given: the params file decides everything (its checkpoint and device survive).
    assert parameter_overrides({"checkpoint": "", "device": "", "autostart": ""}) == {}
    assert parameter_overrides({}) == {}
    given = parameter_overrides(
        {"checkpoint": "/m.safetensors", "device": "", "autostart": "false"}
    )
    assert given == {"checkpoint": "/m.safetensors", "autostart": False}
    assert parameter_overrides({"device": "cuda:1", "autostart": "True"}) == {
        "device": "cuda:1",
        "autostart": True,
    }
    assert parameter_overrides({"anchor_mode": "scale"}) == {"anchor_mode": "scale"}
    with pytest.raises(ValueError, match="autostart"):
        parameter_overrides({"autostart": "maybe"})


def test_params_file_value_survives_when_the_argument_is_not_given(tmp_path: Path) -> None:
    """What ROS does with [params_file, overrides]: later dicts win, key by key."""
    from moa_depth_ros.node.launch_args import parameter_overrides

    user_file = {"checkpoint": "/robot/model.safetensors", "device": "cpu", "autostart": True}
    merged = {**user_file, **parameter_overrides({"checkpoint": "", "device": "", "autostart": ""})}
    assert merged == user_file
    merged = {**user_file, **parameter_overrides({"device": "cuda"})}
    assert merged == {**user_file, "device": "cuda"}


def test_multi_camera_launch_file_passes_cameras_and_their_remappings() -> None:
    source = MULTI_CAMERA_LAUNCH_FILE.read_text()
    tree = ast.parse(source, str(MULTI_CAMERA_LAUNCH_FILE))
    assert set(_string_args_of_calls(tree, "DeclareLaunchArgument")) >= {
        "cameras", "namespace", "params_file", "checkpoint", "device", "autostart", "anchor_mode"
    }  # fmt: skip
    assert "remappings=camera_remappings(cameras)" in source
    assert "**camera_parameters(cameras)" in source


def test_read_cameras_from_names_and_from_a_yaml_file(tmp_path: Path) -> None:
    from moa_depth_ros.node.launch_args import camera_parameters, camera_remappings, read_cameras

    cameras = read_cameras(" left, right ,")
    assert cameras == [
        {"name": "left", "image_topic": "/left/image_raw",
         "camera_info_topic": "/left/camera_info"},
        {"name": "right", "image_topic": "/right/image_raw",
         "camera_info_topic": "/right/camera_info"},
    ]  # fmt: skip
    assert camera_remappings(cameras) == [
        ("left/image", "/left/image_raw"),
        ("left/camera_info", "/left/camera_info"),
        ("right/image", "/right/image_raw"),
        ("right/camera_info", "/right/camera_info"),
    ]
    listing = tmp_path / "cameras.yaml"
    listing.write_text(
        "- {name: front, image_topic: /zed/left/image_rect_color}\n"
        "- {name: /back/, camera_info_topic: /rear/info, anchor_mode: scale,\n"
        "   metric_depth_topic: /rear/aligned_depth}\n"
    )
    cameras = read_cameras(str(listing))
    assert cameras == [
        {"name": "front", "image_topic": "/zed/left/image_rect_color",
         "camera_info_topic": "/front/camera_info"},
        {"name": "back", "image_topic": "/back/image_raw", "camera_info_topic": "/rear/info",
         "anchor_mode": "scale", "metric_depth_topic": "/rear/aligned_depth"},
    ]  # fmt: skip
    assert ("back/metric_depth", "/rear/aligned_depth") in camera_remappings(cameras)
    assert len(camera_remappings(cameras)) == 5
    assert camera_parameters(cameras) == {"cameras": ["front", "back"], "back.anchor_mode": "scale"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no camera"),
        ("left,left", "duplicate"),
        ("a/b", "not a camera name"),
        ("cam.left", "not a camera name"),
    ],
)
def test_read_cameras_refuses_bad_lists(spec: str, message: str) -> None:
    from moa_depth_ros.node.launch_args import read_cameras

    with pytest.raises(ValueError, match=message):
        read_cameras(spec)


def test_read_cameras_refuses_a_malformed_yaml_file(tmp_path: Path) -> None:
    from moa_depth_ros.node.launch_args import read_cameras

    listing = tmp_path / "cameras.yaml"
    listing.write_text("front: /zed/image\n")
    with pytest.raises(ValueError, match="expected a list of cameras, got dict"):
        read_cameras(str(listing))
    listing.write_text("- {name: /}\n")
    with pytest.raises(ValueError, match="empty name"):
        read_cameras(str(listing))
    listing.write_text("- {image_topic: /zed/image}\n")
    with pytest.raises(ValueError, match="needs a 'name'"):
        read_cameras(str(listing))


@pytest.mark.skipif(
    not HAVE_LAUNCH_ROS,
    reason="launch_ros is not importable (not on PyPI; runs on a ROS 2 install)",
)
def test_launch_description_builds_with_launch_ros() -> None:
    from launch.actions import DeclareLaunchArgument

    node, description = _expanded_node(
        LAUNCH_FILE,
        {
            "namespace": "cam1",
            "image_topic": "/cam1/image_raw",
            "camera_info_topic": "/cam1/camera_info",
            "params_file": str(REPO / "config" / "depth.yaml"),
            "checkpoint": "",
            "device": "cpu",
            "autostart": "",
            "anchor_mode": "",
            "metric_depth_topic": "/cam1/aligned_depth",
            "metric_points_topic": "metric_points",
        },
    )
    declared = {
        entity.name for entity in description.entities if isinstance(entity, DeclareLaunchArgument)
    }
    assert declared >= REQUIRED_ARGUMENTS
    remappings = dict(node.expanded_remapping_rules)
    assert remappings["image"] == "/cam1/image_raw"
    assert remappings["camera_info"] == "/cam1/camera_info"
    assert remappings["metric_depth"] == "/cam1/aligned_depth"


def test_rviz_config_shows_the_outputs_reliably() -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    displays = {d["Class"]: [] for d in manager["Displays"]}
    for display in manager["Displays"]:
        displays[display["Class"]].append(display)
    image_topics = {d["Topic"]["Value"] for d in displays["rviz_default_plugins/Image"]}
    assert image_topics == {"/camera/depth/colorized", "/camera/depth/image"}
    [cloud] = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/camera/depth/points"
    assert cloud["Topic"]["Reliability Policy"] == "Reliable"
    assert cloud["Color Transformer"] == "RGB8"


@pytest.mark.skipif(
    not HAVE_LAUNCH_ROS,
    reason="launch_ros is not importable (not on PyPI; runs on a ROS 2 install)",
)
def test_multi_camera_launch_description_builds_with_launch_ros() -> None:
    node, _ = _expanded_node(
        MULTI_CAMERA_LAUNCH_FILE,
        {
            "cameras": "left,right",
            "namespace": "",
            "params_file": str(REPO / "config" / "depth.yaml"),
            "checkpoint": "",
            "device": "",
            "autostart": "",
            "anchor_mode": "",
        },
    )
    remappings = dict(node.expanded_remapping_rules)
    assert remappings["left/image"] == "/left/image_raw"
    assert remappings["right/camera_info"] == "/right/camera_info"
