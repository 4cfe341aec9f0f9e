"""Depth → coloured PointCloud2 bytes (depth_to_points + pack_cloud) at 640×480.

Also times np.copy of the same number of output bytes in the same run, so the ratio says how far
the packing is from a plain memory copy on this machine.
"""

from __future__ import annotations

import numpy as np

from bench.common import emit, summarize_ms, time_calls
from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
from moa_depth_ros.msgs.pointcloud import pack_cloud

WIDTH, HEIGHT = 640, 480
REPEATS = 200
TARGET_MS = 10.0
TARGET_COPY_RATIO = 3.0


def main() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.2, 10.0, size=(HEIGHT, WIDTH)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan  # some invalid pixels, as real maps have
    rgb = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    intrinsics = CameraIntrinsics(525.0, 525.0, 319.5, 239.5, WIDTH, HEIGHT)

    def cloud() -> np.ndarray:
        return pack_cloud(depth_to_points(depth, intrinsics), rgb)[0]

    reference = np.empty_like(cloud())  # same byte count as one cloud
    cloud_ms = summarize_ms(time_calls(cloud, REPEATS))
    copy_ms = summarize_ms(time_calls(lambda: np.copy(reference), REPEATS))
    ratio = cloud_ms["median_ms"] / copy_ms["median_ms"]
    emit(
        {
            "bench": "cloud",
            "size": f"{WIDTH}x{HEIGHT}",
            "fields": "xyzrgb",
            "bytes": reference.nbytes,
            "cloud_median_ms": round(cloud_ms["median_ms"], 3),
            "cloud_p95_ms": round(cloud_ms["p95_ms"], 3),
            "copy_median_ms": round(copy_ms["median_ms"], 3),
            "ratio_to_copy": round(ratio, 2),
            "target_ms": TARGET_MS,
            "target_ms_met": cloud_ms["median_ms"] <= TARGET_MS,
            "target_copy_ratio": TARGET_COPY_RATIO,
            "target_copy_ratio_met": ratio <= TARGET_COPY_RATIO,
            "n": cloud_ms["n"],
        }
    )


if __name__ == "__main__":
    main()
