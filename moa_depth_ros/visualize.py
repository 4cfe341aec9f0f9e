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


#: Candidate tick values of a depth colour bar, metres ("nice" numbers on an inverse scale).
_DEPTH_TICKS = (0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 80, 100)


def depth_colorbar_ticks(
    min_depth: float, max_depth: float, width: int, min_gap: int = 40
) -> list[tuple[int, float]]:
    """(x, metres) of the labelled ticks of :func:`depth_colorbar`: ``min_depth`` at x = 0 (near,
    left), ``max_depth`` at the right end, nice values between, positioned as the inverse-depth
    colour map places them, at least ``min_gap`` px apart."""
    check_depth_range(min_depth, max_depth, "depth_colorbar")
    inv_near, inv_far = 1.0 / min_depth, 1.0 / max_depth

    def x_of(depth: float) -> int:
        return round((inv_near - 1.0 / depth) / (inv_near - inv_far) * (width - 1))

    ticks = [(0, float(min_depth))]
    for value in (*(v for v in _DEPTH_TICKS if min_depth < v < max_depth), float(max_depth)):
        x = x_of(value)
        if x - ticks[-1][0] >= min_gap:
            ticks.append((x, float(value)))
        elif value == max_depth:  # the far end is always labelled: it replaces a close tick
            ticks[-1] = (x, float(value)) if len(ticks) > 1 else ticks[-1]
    return ticks


def _metres(value: float) -> str:
    return f"{value:.2g}" if value < 1 else f"{value:.3g}"


def labelled_strip(
    colours: np.ndarray, labels: Sequence[tuple[int, str]], height: int, marks: bool = True
) -> np.ndarray:
    """A horizontal colour bar: H×W×3 uint8 **RGB**, white, the ``colours`` (1×W×3 RGB) as a
    strip on top and each ``(x, text)`` label below it (with a tick mark at x when ``marks``),
    kept inside the bar; a label wider than the bar (tiny test images) is left out."""
    width = colours.shape[1]
    bar = np.full((height, width, 3), 255, dtype=np.uint8)
    strip = max(6, height // 3)
    bar[:strip] = colours
    scale = 0.4
    for x, text in labels:
        if marks:
            bar[strip : strip + 4, x] = 0
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if text_width > width:
            continue
        left = min(max(0, x - text_width // 2), width - text_width)
        cv2.putText(bar, text, (left, height - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    return bar


def depth_colorbar(min_depth: float, max_depth: float, width: int, height: int = 34) -> np.ndarray:
    """A horizontal colour bar in metres for :func:`colorize_depth` pictures: H×W×3 uint8 **RGB**,
    the colour strip on top, tick marks and labels (``m``) below, white background."""
    width = max(width, 1)
    inv = np.linspace(1.0 / min_depth, 1.0 / max_depth, width)
    colours = colorize_depth((1.0 / inv)[None, :].astype(np.float32), min_depth, max_depth)
    labels = [
        (x, _metres(value) + (" m" if x == 0 else ""))
        for x, value in depth_colorbar_ticks(min_depth, max_depth, width)
    ]
    return labelled_strip(colours[..., ::-1], labels, height)
