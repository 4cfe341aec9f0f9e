"""Procedural indoor RGB-D scenes with exact depth (``scenes``: the renderer) and datasets of
them in the NYU sync layout (``dataset``: the writer). The command is ``cli.synthetic``."""

from moa_depth_ros.synthetic.dataset import (
    write_depth_png,
    write_rgb_jpg,
    write_synthetic_dataset,
)
from moa_depth_ros.synthetic.scenes import (
    FRAMES_PER_ROOM,
    Box,
    CameraPose,
    Material,
    Scene,
    Sphere,
    camera_rotation,
    nyu_intrinsics,
    random_camera,
    random_scene,
    render_frame,
    render_sequence,
    render_view,
)

__all__ = [
    "FRAMES_PER_ROOM",
    "Box",
    "CameraPose",
    "Material",
    "Scene",
    "Sphere",
    "camera_rotation",
    "nyu_intrinsics",
    "random_camera",
    "random_scene",
    "render_frame",
    "render_sequence",
    "render_view",
    "write_depth_png",
    "write_rgb_jpg",
    "write_synthetic_dataset",
]
