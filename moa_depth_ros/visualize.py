"""Depth pictures for people: colorized depth and side-by-side panels (numpy + OpenCV, no ROS)."""

from __future__ import annotations

from collections.abc import Sequence

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


def display_range(
    depths: Sequence[np.ndarray],
    min_depth: float,
    max_depth: float,
    percentiles: tuple[float, float] = (1.0, 99.0),
    stride: int = 1,
) -> tuple[float, float]:
    """Colour range for depth pictures: the given percentiles of the valid depths (every
    ``stride``-th pixel), inside [min_depth, max_depth]. The metric range (e.g. 0.1–10 m) would
    spend the inverse-depth colour map on depths no pixel has and paint a 1–5 m room in one
    colour."""
    values = [d[::stride, ::stride][np.isfinite(d[::stride, ::stride])] for d in depths]
    values = [v[(v > min_depth) & (v < max_depth)] for v in values]
    values = np.concatenate([v.ravel() for v in values]) if values else np.empty(0)
    if values.size == 0:
        return min_depth, max_depth
    low, high = (float(v) for v in np.percentile(values, percentiles))
    low, high = max(low, min_depth), min(high, max_depth)
    return (low, high) if high > low else (min_depth, max_depth)


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
