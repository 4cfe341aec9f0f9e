"""Depth pictures for people: colorized depth and side-by-side panels (numpy + OpenCV, no ROS)."""

from __future__ import annotations

import cv2
import numpy as np

from moa_depth_ros.errors import check_depth_range


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Depth (metres) → H×W×3 uint8 **BGR** picture for viewers (publish as ``bgr8``).

    Colours TURBO over *inverse* depth between 1/max_depth and 1/min_depth: near is red, far is
    blue, and most of the colour range goes to nearby structure, where metric detail matters for
    a robot (a linear scale would spend it on the far background). Depths outside the range are
    clamped; NaN, ±Inf and non-positive pixels are black.
    """
    check_depth_range(min_depth, max_depth, "colorize_depth")
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    inv_near, inv_far = 1.0 / min_depth, 1.0 / max_depth
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.clip(1.0 / np.where(valid, depth, max_depth), inv_far, inv_near)
    level = np.rint((inv - inv_far) * (255.0 / (inv_near - inv_far))).astype(np.uint8)
    bgr = cv2.applyColorMap(level, cv2.COLORMAP_TURBO)
    bgr[~valid] = 0
    return bgr


def depth_panel(
    rgb: np.ndarray,
    depths: list[np.ndarray],
    min_depth: float,
    max_depth: float,
) -> np.ndarray:
    """RGB | colorized depth maps side by side, as one H×(W·(1+n))×3 uint8 **RGB** picture."""
    height, width = rgb.shape[:2]
    tiles = [rgb]
    for depth in depths:
        if depth.shape != (height, width):
            depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
        tiles.append(colorize_depth(depth, min_depth, max_depth)[..., ::-1])
    return np.concatenate(tiles, axis=1)
