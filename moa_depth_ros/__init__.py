"""moa_depth_ros: metric monocular depth and point clouds from CLIP-based depth models."""

__version__ = "0.1.0"
