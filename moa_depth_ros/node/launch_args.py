"""Launch arguments that override the params file only when the user gives them (pure Python).

``launch/depth.launch.py`` declares ``checkpoint``, ``device``, ``autostart`` and ``anchor_mode``
with an empty
default meaning "not given", and passes :func:`parameter_overrides` of their values after the
params file. So a value written in the user's params file survives unless the same setting is
also given on the command line. No launch imports: tests call this without launch_ros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moa_depth_ros.node.camera import camera_names

__all__ = [
    "NOT_GIVEN",
    "OVERRIDABLE",
    "camera_parameters",
    "camera_remappings",
    "parameter_overrides",
    "read_cameras",
]

#: The default of every overridable launch argument: "leave the params file in charge".
NOT_GIVEN = ""
#: Launch argument → parameter type.
OVERRIDABLE: dict[str, type] = {
    "checkpoint": str,
    "device": str,
    "autostart": bool,
    "anchor_mode": str,
}
#: Optional per-camera entries of a cameras YAML file: anchor inputs remapped when given.
_ANCHOR_TOPICS = {"metric_depth_topic": "metric_depth", "metric_points_topic": "metric_points"}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def parameter_overrides(arguments: Mapping[str, str]) -> dict[str, Any]:
    """Node parameters for the launch arguments the user gave (empty strings are not given).

    Raises:
        ValueError: a boolean argument that is not true/false.
    """
    overrides: dict[str, Any] = {}
    for name, kind in OVERRIDABLE.items():
        value = arguments.get(name, NOT_GIVEN)
        if value == NOT_GIVEN:
            continue
        if kind is bool:
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"launch argument {name}:={value!r}: expected true or false")
            overrides[name] = _BOOLEANS[value.lower()]
        else:
            overrides[name] = value
    return overrides


def read_cameras(spec: str) -> list[dict[str, str]]:
    """The cameras of ``multi_camera.launch.py``: ``left,right`` (names; topics
    ``/<name>/image_raw`` and ``/<name>/camera_info``) or the path of a YAML file with a list
    of ``{name, image_topic, camera_info_topic}`` (topics optional, same defaults), each
    optionally with ``metric_depth_topic`` / ``metric_points_topic`` (metric anchoring inputs,
    remapped when given) and ``anchor_mode`` (that camera's ``<name>.anchor_mode``).

    Raises:
        ValueError: no camera, a duplicate or empty name, or a malformed YAML entry.
    """
    import yaml

    if spec.endswith((".yaml", ".yml")):
        with open(spec) as handle:
            entries = yaml.safe_load(handle)
        if not isinstance(entries, list):
            raise ValueError(f"{spec}: expected a list of cameras, got {type(entries).__name__}")
    else:
        entries = [{"name": name.strip()} for name in spec.split(",") if name.strip()]
    cameras = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"camera entry {entry!r} needs a 'name'")
        name = entry["name"].strip("/")
        if not name:
            raise ValueError(f"camera entry {entry!r}: empty name")
        camera = {
            "name": name,
            "image_topic": str(entry.get("image_topic", f"/{name}/image_raw")),
            "camera_info_topic": str(entry.get("camera_info_topic", f"/{name}/camera_info")),
        }
        for key in (*_ANCHOR_TOPICS, "anchor_mode"):
            if key in entry:
                camera[key] = str(entry[key])
        cameras.append(camera)
    if not cameras:
        raise ValueError("no camera given")
    camera_names([camera["name"] for camera in cameras])  # the node's own rules
    return cameras


def camera_remappings(cameras: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Node remappings: ``<name>/image`` and ``<name>/camera_info`` to each camera's topics
    (``<name>/image/compressed`` follows ``<name>/image``, as in the single-camera node)."""
    remaps = []
    for camera in cameras:
        remaps.append((f"{camera['name']}/image", camera["image_topic"]))
        remaps.append((f"{camera['name']}/camera_info", camera["camera_info_topic"]))
        for key, relative in _ANCHOR_TOPICS.items():
            if key in camera:
                remaps.append((f"{camera['name']}/{relative}", camera[key]))
    return remaps


def camera_parameters(cameras: list[dict[str, str]]) -> dict[str, Any]:
    """Node parameters of a camera list: ``cameras`` and each given ``<name>.anchor_mode``."""
    parameters: dict[str, Any] = {"cameras": [camera["name"] for camera in cameras]}
    for camera in cameras:
        if "anchor_mode" in camera:
            parameters[f"{camera['name']}.anchor_mode"] = camera["anchor_mode"]
    return parameters
