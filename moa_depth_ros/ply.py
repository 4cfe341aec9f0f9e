"""Write point clouds as PLY files (binary little-endian or ASCII), numpy only.

PLY opens in MeshLab, CloudCompare, Open3D and Blender, so a recorded ``depth/points`` cloud can
be looked at without ROS. Vertices are ``float x, y, z`` plus ``uchar red, green, blue`` when
colours are given; non-finite points are dropped (PLY has no notion of an organized cloud).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_ply"]


def write_ply(
    path: str | Path,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    binary: bool = True,
) -> int:
    """Write N×3 (or h×w×3) ``points`` with optional matching uint8 RGB ``colors``.

    Returns the number of vertices written (points with a NaN or inf coordinate are skipped).
    """
    xyz = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = None
    if colors is not None:
        rgb = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        if rgb.shape[0] != xyz.shape[0]:
            raise ValueError(f"{rgb.shape[0]} colours for {xyz.shape[0]} points")
    keep = np.isfinite(xyz).all(axis=1)
    xyz = xyz[keep]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        rgb = rgb[keep]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(xyz.shape[0], dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    if rgb is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = rgb[:, channel]

    properties = [f"property float {name}" for name in "xyz"]
    if rgb is not None:
        properties += [f"property uchar {name}" for name in ("red", "green", "blue")]
    header = "\n".join(
        [
            "ply",
            f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            "comment written by moa_depth_ros",
            f"element vertex {len(vertices)}",
            *properties,
            "end_header",
        ]
    )
    with open(path, "wb") as out:
        out.write(header.encode("ascii") + b"\n")
        if binary:
            out.write(vertices.tobytes())
        else:
            columns = [xyz] if rgb is None else [xyz, rgb]
            formats = ["%.6g"] * 3 + ["%d"] * (3 * (len(columns) - 1))
            np.savetxt(out, np.column_stack(columns).astype(np.float64), fmt=formats)
    return len(vertices)
