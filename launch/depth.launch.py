"""Launch the moa_depth_ros depth node for one camera.

    ros2 launch moa_depth_ros depth.launch.py \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info \
        checkpoint:=/path/to/model.safetensors

The node is a lifecycle node that configures and activates itself (parameter ``autostart``,
default true); pass ``autostart:=false`` to leave the transitions to a lifecycle manager.
Outputs appear under the namespace: ``/<namespace>/depth/image``, ``depth/camera_info``,
``depth/points``, ``depth/colorized``, ``depth/confidence``. For several cameras, one node
with one model: ``multi_camera.launch.py``. With ``input_transport: compressed`` in the params
file the node subscribes to ``<image_topic>/compressed``. ``checkpoint``, ``device``,
``autostart`` and ``anchor_mode`` override the params file only when given; with
``anchor_mode:=scale`` the node anchors its depth to ``metric_depth_topic`` and/or
``metric_points_topic`` (docs/anchoring.md).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from moa_depth_ros.node.launch_args import NOT_GIVEN, OVERRIDABLE, parameter_overrides

PACKAGE = "moa_depth_ros"


def _depth_node(context, *args, **kwargs):
    image_topic = LaunchConfiguration("image_topic").perform(context)
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    return [
        LifecycleNode(
            package=PACKAGE,
            executable="depth_node",
            name="depth_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            # Later entries win: the arguments the user gave override the params file.
            parameters=[LaunchConfiguration("params_file"), parameter_overrides(given)],
            # The node subscribes '<image>/compressed' itself when input_transport is
            # 'compressed', so remapping 'image' moves both inputs.
            remappings=[
                ("image", image_topic),
                ("camera_info", LaunchConfiguration("camera_info_topic")),
                ("metric_depth", LaunchConfiguration("metric_depth_topic")),
                ("metric_points", LaunchConfiguration("metric_points_topic")),
            ],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="camera", description="Namespace of the node and outputs."
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/image_raw",
            description="sensor_msgs/Image input (its '/compressed' sibling is used when "
            "input_transport is 'compressed').",
        ),
        DeclareLaunchArgument(
            "camera_info_topic",
            default_value="/camera/camera_info",
            description="sensor_msgs/CameraInfo of the camera (needed for point clouds).",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "depth.yaml"]),
            description="ROS 2 parameters file for the node.",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value=NOT_GIVEN,
            description="Model .safetensors file; not given: the params file's checkpoint "
            "(empty there = zero-shot DepthCLIP).",
        ),
        DeclareLaunchArgument(
            "device",
            default_value=NOT_GIVEN,
            description="auto | cpu | cuda | cuda:N; not given: the params file's device.",
        ),
        DeclareLaunchArgument(
            "metric_depth_topic",
            default_value="metric_depth",
            description="Metric anchoring input: depth registered to the camera, 16UC1 mm or "
            "32FC1 m (used with anchor_mode scale or scale_shift).",
        ),
        DeclareLaunchArgument(
            "metric_points_topic",
            default_value="metric_points",
            description="Metric anchoring input: PointCloud2 in the camera's optical frame.",
        ),
        DeclareLaunchArgument(
            "anchor_mode",
            default_value=NOT_GIVEN,
            description="none | scale | scale_shift; not given: the params file's anchor_mode.",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value=NOT_GIVEN,
            description="true | false: configure and activate without a lifecycle manager; "
            "not given: the params file's autostart.",
        ),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_depth_node)])
