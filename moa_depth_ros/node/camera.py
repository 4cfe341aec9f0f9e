"""One camera served by the depth node: its topic names, camera_info matcher, counters, settings.

The default node has one unnamed camera (topics ``image``, ``camera_info``, ``depth/...``, as
ever). With the ``cameras`` parameter it serves several, each under its own name
(``left/image`` → ``left/depth/image``), each with its own camera_info matching, frame slot,
statistics, metric anchoring and the per-camera parameters ``<name>.publish_points``,
``<name>.points_decimation`` and ``<name>.anchor_mode``; the model and the other parameters
are shared. No rclpy here (``launch_args`` checks camera names with :func:`camera_names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from moa_depth_ros.node.stats import NodeStats
from moa_depth_ros.node.time_sync import ApproximateTimeSync

if TYPE_CHECKING:  # params imports rclpy's message types; launch_args needs camera_names only
    from moa_depth_ros.node.anchors import CameraAnchoring
    from moa_depth_ros.node.params import NodeSettings

__all__ = ["PER_CAMERA_PARAMETERS", "Camera", "camera_names"]

#: Parameters each named camera has of its own (``<name>.<parameter>``), initialized from the
#: node-wide value at start.
PER_CAMERA_PARAMETERS = ("publish_points", "points_decimation", "anchor_mode")


def camera_names(value: Any) -> list[str]:
    """The ``cameras`` parameter as names: [] or [""] is the one unnamed camera.

    Raises:
        ValueError: a duplicate, an empty name among several, or a name with '/' or '.'.
    """
    names = [str(name) for name in (value or [""])]
    if names == [""]:
        return names
    for name in names:
        if not name or "/" in name or "." in name:
            raise ValueError(
                f"cameras: {name!r} is not a camera name (one topic segment, no '/' or '.')"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"cameras: duplicate names in {names}")
    return names


@dataclass
class Camera:
    """The state of one camera (its ROS entities are created and destroyed by the node)."""

    name: str
    sync: ApproximateTimeSync
    stats: NodeStats
    settings: NodeSettings
    publishers: dict[str, Any] = field(default_factory=dict)
    image_subscription: Any = None
    info_subscription: Any = None
    anchoring: CameraAnchoring | None = None  # with anchor_mode other than none
    anchor_subscriptions: list[Any] = field(default_factory=list)

    def topic(self, relative: str) -> str:
        """``relative`` under this camera's name (unchanged for the unnamed camera)."""
        return f"{self.name}/{relative}" if self.name else relative

    def parameter(self, name: str) -> str:
        return f"{self.name}.{name}"

    def settings_from(self, node_settings: NodeSettings, values: Mapping[str, Any]) -> None:
        """This camera's settings: the node's, with its own per-camera parameters."""
        if not self.name:
            self.settings = node_settings
            return
        own = {p: values[self.parameter(p)] for p in PER_CAMERA_PARAMETERS}
        self.settings = replace(node_settings, **own)

    def anyone_subscribed(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in self.publishers.values())
