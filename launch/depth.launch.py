"""Launch the moa_depth_ros depth node for one camera.

    ros2 launch moa_depth_ros depth.launch.py \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info \
        checkpoint:=/path/to/model.safetensors

The node is a lifecycle node that configures and activates itself (parameter ``autostart``,
default true); pass ``autostart:=false`` to leave the transitions to a lifecycle manager.
Outputs appear under the namespace: ``/<namespace>/depth/image``, ``depth/camera_info``,
``depth/points``, ``depth/colorized``, ``depth/confidence``. For several cameras, include this
file once per camera with its own namespace. With ``input_transport: compressed`` in the params
file the node subscribes to ``<image_topic>/compressed``.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "moa_depth_ros"


def generate_launch_description() -> LaunchDescription:
    namespace = LaunchConfiguration("namespace")
    image_topic = LaunchConfiguration("image_topic")
    camera_info_topic = LaunchConfiguration("camera_info_topic")
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
            default_value="",
            description="Model .safetensors file (overrides params_file); empty = zero-shot "
            "DepthCLIP.",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="auto",
            description="auto | cpu | cuda | cuda:N (overrides params_file).",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="Configure and activate without a lifecycle manager.",
        ),
    ]
    node = LifecycleNode(
        package=PACKAGE,
        executable="depth_node",
        name="depth_node",
        namespace=namespace,
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                # value_type=str: an empty checkpoint must stay '' (not YAML null).
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
            ("camera_info", camera_info_topic),
        ],
    )
    return LaunchDescription([*arguments, node])
