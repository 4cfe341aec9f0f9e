"""NYU training augmentation: samples/s per worker at 480×640, before and after the lookup-table
colour jitter, interleaved in one run (the machine's drift hits both alike).

"before" is the float ``np.power`` jitter the package used until the lookup table (kept here
only for this comparison); "after" is ``moa_depth_train.augment.jitter_colors``. The full
augmentation (rotation, flip, jitter always on) is timed the same way, plus reading a JPEG +
PNG pair from disk, i.e. one DataLoader worker's work per sample. (The float jitter of "before"
was the main cost; rotation and decoding are the same in both.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.common import emit, summarize_ms, time_calls
from moa_depth_train import augment
from moa_depth_train.augment import Augmentation, AugmentConfig, jitter_colors
from moa_depth_train.datasets import read_rgbd_pair

REPEATS = 30


def float_jitter(image: np.ndarray, gamma: float, brightness: float, color: np.ndarray):
    """The previous implementation: float32 power, scale, clip (BTS ``augment_image``)."""
    x = image.astype(np.float32) / 255.0
    x = np.power(x, gamma) * brightness * np.asarray(color, dtype=np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.0, (480, 640)).astype(np.float32)
    args = (0.95, 1.1, np.array([0.93, 1.05, 1.0]))
    jitter = {
        "before": lambda: float_jitter(image, *args),
        "after": lambda: jitter_colors(image, *args),
    }
    for label, fn in jitter.items():
        emit(
            {
                "bench": "augment_jitter_480x640",
                "impl": label,
                **summarize_ms(time_calls(fn, REPEATS)),
            }
        )

    config = AugmentConfig(color_prob=1.0)  # the NYU recipe, jitter on every sample
    pipeline = Augmentation(config)
    with tempfile.TemporaryDirectory() as tmp:
        rgb_path, depth_path = Path(tmp) / "rgb.jpg", Path(tmp) / "d.png"
        cv2.imwrite(str(rgb_path), image[..., ::-1])
        cv2.imwrite(str(depth_path), (depth * 1000).astype(np.uint16))

        def sample() -> None:
            rgb, gt = read_rgbd_pair(rgb_path, depth_path)
            pipeline(rgb, gt, rng)

        def augment_only() -> None:
            pipeline(image, depth, rng)

        cases = {"augment_480x640": augment_only, "augment_sample_480x640": sample}
        results = {(case, label): [] for case in cases for label in ("before", "after")}
        real = augment.jitter_colors
        for _ in range(REPEATS):  # interleaved
            for (case, label), times in results.items():
                augment.jitter_colors = float_jitter if label == "before" else real
                times += time_calls(cases[case], 1, warmup=0)
        augment.jitter_colors = real
    medians = {}
    for (case, label), times in results.items():
        stats = summarize_ms(times)
        medians[case, label] = stats["median_ms"]
        emit({"bench": case, "impl": label, **stats,
              "samples_per_s_per_worker": round(1e3 / stats["median_ms"], 1)})  # fmt: skip
    for case in cases:
        ratio = medians[case, "before"] / medians[case, "after"]
        emit({"bench": "augment_speedup", "case": case, "before_over_after": round(ratio, 2)})


if __name__ == "__main__":
    main()
