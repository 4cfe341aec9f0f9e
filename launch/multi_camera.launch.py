"""Launch one depth node for several cameras: one model, batched inference.

    ros2 launch moa_depth_ros multi_camera.launch.py cameras:=left,right \
        checkpoint:=/path/to/model.safetensors
    ros2 launch moa_depth_ros multi_camera.launch.py cameras:=/path/to/cameras.yaml

``cameras`` is a comma-separated list of names (camera ``left`` reads ``/left/image_raw`` and
``/left/camera_info``) or a YAML file listing ``{name, image_topic, camera_info_topic}``, each
optionally with ``metric_depth_topic``, ``metric_points_topic`` and ``anchor_mode`` (metric
anchoring for that camera, docs/anchoring.md).
Outputs of camera ``left``: ``/<namespace>/left/depth/image``, ``.../depth/points``, ... Every
camera has its own camera_info matching, frame slot and diagnostics; the newest frames of all
cameras run through the model in one batch. ``checkpoint``, ``device``, ``autostart`` and
``anchor_mode`` override the params file only when given.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from moa_depth_ros.node.launch_args import (
    NOT_GIVEN,
    OVERRIDABLE,
    camera_parameters,
    camera_remappings,
    parameter_overrides,
    read_cameras,
)

PACKAGE = "moa_depth_ros"


def _depth_node(context, *args, **kwargs):
    cameras = read_cameras(LaunchConfiguration("cameras").perform(context))
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {**parameter_overrides(given), **camera_parameters(cameras)}
    return [
        LifecycleNode(
            package=PACKAGE,
            executable="depth_node",
            name="depth_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=camera_remappings(cameras),
        )
    ]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "cameras",
            description="Comma-separated camera names, or a YAML file of "
            "{name, image_topic, camera_info_topic}.",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and outputs."
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "depth.yaml"]),
            description="ROS 2 parameters file for the node.",
        ),
        DeclareLaunchArgument(
            "checkpoint", default_value=NOT_GIVEN, description="Model file; not given: params file."
        ),
        DeclareLaunchArgument(
            "device", default_value=NOT_GIVEN, description="auto | cpu | cuda | cuda:N."
        ),
        DeclareLaunchArgument("autostart", default_value=NOT_GIVEN, description="true | false."),
        DeclareLaunchArgument(
            "anchor_mode", default_value=NOT_GIVEN, description="none | scale | scale_shift."
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_depth_node)])
