"""Pinhole geometry for depth maps: camera_info intrinsics, back-projection, projection.

numpy only (no ROS, no torch) so the node's maths is unit-testable anywhere; ``msgs/`` turns
messages into these numbers (``msgs.camera_info``) and points into PointCloud2 bytes
(``msgs.pointcloud``).

Conventions (docs/ros.md):
- Pixel coordinates are those of image_geometry / OpenCV: pixel (u, v) is column u, row v, and
  camera_info's cx, cy are in the same units. Points are in the optical frame (x right, y down,
  z forward), X = (u - cx)·Z/fx, Y = (v - cy)·Z/fy, as depth_image_proc computes them.
- Changing resolution multiplies fx, cx by the width ratio and fy, cy by the height ratio, as
  image_proc ResizeNode does, and binning/ROI follow REP 104 (cx' = (cx - x_offset)/binning_x).
  Both treat low-resolution pixel k as the full-resolution pixel k·s (corner convention), which
  is exactly what strided sampling `depth[::d, ::d]` does, so decimation, binning and resizing
  all agree with each other. (A centre convention would add (s - 1)/2 px; we follow ROS.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: NYU Depth V2's colour focal length in pixels at 640 px width (the value BTS list files carry).
NYU_FOCAL = 518.8579


def _require_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an image of `width`×`height` pixels (no distortion: rectified)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        # Coerce numpy scalars from message arrays to plain numbers so equal intrinsics hash
        # equally (they key the ray cache).
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("width", "height"):
            object.__setattr__(self, name, int(getattr(self, name)))
        _require_positive("fx", self.fx)
        _require_positive("fy", self.fy)
        for name in ("cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        _require_positive("width", self.width)
        _require_positive("height", self.height)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of the same camera resized to `width`×`height` (image_proc ResizeNode)."""
        if (width, height) == (self.width, self.height):
            return self
        sx = width / self.width
        sy = height / self.height
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height
        )


def intrinsics_from_camera_info(
    width: int,
    height: int,
    k: Any,
    p: Any,
    binning_x: int = 0,
    binning_y: int = 0,
    roi_x_offset: int = 0,
    roi_y_offset: int = 0,
    roi_width: int = 0,
    roi_height: int = 0,
) -> CameraIntrinsics:
    """Intrinsics of the published image, as image_geometry::PinholeCameraModel derives them.

    `width`/`height`, K and P describe the full-resolution sensor; the published image is that
    sensor cropped to the ROI, then binned. fx, fy, cx, cy come from P (rectified) unless P is
    all zero, in which case K is used. Binning 0 means 1; an all-zero ROI means the full image.
    """
    k = np.asarray(k, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ValueError(f"camera_info K must have 9 elements, got {k.size}")
    if p.size != 12:
        raise ValueError(f"camera_info P must have 12 elements, got {p.size}")
    _require_positive("camera_info width", width)
    _require_positive("camera_info height", height)

    if np.any(p):
        source, matrix, (i_fx, i_fy, i_cx, i_cy) = "P", p, (0, 5, 2, 6)
    elif np.any(k):
        source, matrix, (i_fx, i_fy, i_cx, i_cy) = "K", k, (0, 4, 2, 5)
    else:
        raise ValueError("camera_info K and P are both all zero (uncalibrated camera)")
    fx, fy, cx, cy = (float(matrix[i]) for i in (i_fx, i_fy, i_cx, i_cy))
    _require_positive(f"camera_info {source}[{i_fx}] (fx)", fx)
    _require_positive(f"camera_info {source}[{i_fy}] (fy)", fy)

    for name, value in (("binning_x", binning_x), ("binning_y", binning_y)):
        if value < 0:
            raise ValueError(f"camera_info {name} must be >= 0, got {value}")
    bx, by = binning_x or 1, binning_y or 1

    if (roi_x_offset, roi_y_offset, roi_width, roi_height) == (0, 0, 0, 0):
        roi_width, roi_height = width, height
    for name, size, offset, full in (
        ("x", roi_width, roi_x_offset, width),
        ("y", roi_height, roi_y_offset, height),
    ):
        if size <= 0 or offset < 0 or offset + size > full:
            dim = "width" if name == "x" else "height"
            raise ValueError(
                f"camera_info roi ({name}_offset={offset}, {dim}={size}) "
                f"does not fit in the {full}-pixel image {dim}"
            )

    # REP 104: shift by the ROI offset (full-resolution pixels), then divide by the binning.
    return CameraIntrinsics(
        fx=fx / bx,
        fy=fy / by,
        cx=(cx - roi_x_offset) / bx,
        cy=(cy - roi_y_offset) / by,
        width=roi_width // bx,
        height=roi_height // by,
    )


#: Largest relative difference between the camera_info's and the image's width/height ratios.
CAMERA_INFO_ASPECT_TOLERANCE = 0.02


def same_aspect(size_a: tuple[int, ...], size_b: tuple[int, ...], tolerance: float) -> bool:
    """Whether two (height, width, ...) sizes have width/height ratios within ``tolerance``
    (relative) of each other."""
    return abs((size_a[1] / size_a[0]) / (size_b[1] / size_b[0]) - 1.0) <= tolerance


#: Largest |tan| of a pixel ray (89.9° off axis): beyond it a camera model is nonsense.
MAX_RAY_SLOPE = 1e3


def intrinsics_for_image(intrinsics: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """``intrinsics`` scaled to a ``width``×``height`` image, if they can describe it.

    Raises:
        ValueError: the aspect ratios differ by more than CAMERA_INFO_ASPECT_TOLERANCE (a
            camera_info of another camera or a corrupt one), or the scaled intrinsics give
            rays steeper than MAX_RAY_SLOPE or not finite (fx = 1e-300, a 2e9-pixel sensor).
    """
    if not same_aspect(
        (height, width), (intrinsics.height, intrinsics.width), CAMERA_INFO_ASPECT_TOLERANCE
    ):
        raise ValueError(
            f"camera_info describes a {intrinsics.width}x{intrinsics.height} image, which has "
            f"another aspect ratio than the {width}x{height} image"
        )
    scaled = intrinsics.scaled(width, height)
    slopes = (
        max(abs(scaled.cx), abs(width - scaled.cx)) / scaled.fx,
        max(abs(scaled.cy), abs(height - scaled.cy)) / scaled.fy,
    )
    if not all(math.isfinite(s) and s <= MAX_RAY_SLOPE for s in slopes):
        raise ValueError(
            f"camera_info intrinsics give no usable rays for a {width}x{height} image "
            f"(fx={scaled.fx:.3g}, fy={scaled.fy:.3g}, cx={scaled.cx:.3g}, cy={scaled.cy:.3g})"
        )
    return scaled


@functools.lru_cache(maxsize=8)
def _rays(intrinsics: CameraIntrinsics, decimation: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (u - cx)/fx as 1×w and per-row (v - cy)/fy as h×1, for the sampled pixels.

    Keyed by intrinsics already scaled to the depth map, so the key carries its shape too.
    """
    u = np.arange(0, intrinsics.width, decimation, dtype=np.float64)
    v = np.arange(0, intrinsics.height, decimation, dtype=np.float64)
    ray_x = ((u - intrinsics.cx) / intrinsics.fx).astype(np.float32)[np.newaxis, :]
    ray_y = ((v - intrinsics.cy) / intrinsics.fy).astype(np.float32)[:, np.newaxis]
    # Shared between calls: make accidental in-place edits fail loudly.
    ray_x.flags.writeable = False
    ray_y.flags.writeable = False
    return ray_x, ray_y


def depth_to_points(
    depth: np.ndarray, intrinsics: CameraIntrinsics, decimation: int = 1
) -> np.ndarray:
    """Organized points, ceil(H/d)×ceil(W/d)×3 float32, in the optical frame.

    `depth` is H×W metres along z (32FC1). Samples `depth[::d, ::d]` at their full-image pixel
    coordinates. `intrinsics` are rescaled when their size differs from the depth map's.
    Invalid depth (NaN, ±inf, <= 0) gives NaN for x, y and z (organized cloud, is_dense false).

    The result is a view of a planar 3×h×w buffer: computing each coordinate contiguously is
    about twice as fast as interleaving; use np.ascontiguousarray for an interleaved copy.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D H×W array, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise TypeError(
            f"depth must be floating-point metres (32FC1), got {depth.dtype}; "
            "convert 16UC1 millimetres first"
        )
    if decimation < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    height, width = depth.shape
    ray_x, ray_y = _rays(intrinsics.scaled(width, height), int(decimation))

    sampled = depth[::decimation, ::decimation]
    planes = np.empty((3, *sampled.shape), dtype=np.float32)
    x, y, z = planes
    np.copyto(z, sampled)
    # Mark invalid z as NaN first: the products below then carry NaN into x and y for free.
    # NaN is copied through as is, so the (slow, scattered) masked write only covers <= 0 and
    # +inf (-inf is <= 0).
    np.copyto(z, np.float32(np.nan), where=(sampled <= 0) | (sampled == np.inf))
    np.multiply(ray_x, z, out=x)
    np.multiply(ray_y, z, out=y)
    return planes.transpose(1, 2, 0)


def project_points(
    points: np.ndarray, intrinsics: CameraIntrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) of optical-frame points (...×3); NaN/inf where z is 0 or NaN."""
    points = np.asarray(points, dtype=np.float64)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * x / z + intrinsics.cx
        v = intrinsics.fy * y / z + intrinsics.cy
    return u, v
