"""BTS-standard NYU training augmentation, applied identically to image and depth.

Order (as in BTS `bts_dataloader.py`): NYU border crop → rotation → random crop →
horizontal flip → photometric jitter (gamma, brightness, per-channel colour; image only).
Geometric steps keep image and depth aligned pixel for pixel; depth is resampled with
nearest neighbour so no depth values are invented, and pixels rotated in from outside the
image get depth 0 (invalid).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import cv2
import numpy as np

NYU_SIZE = (480, 640)  # (height, width) of the raw NYU frames
#: The crop BTS applies to NYU training frames (`bts_dataloader.py`: PIL box
#: (43, 45, 608, 472)), which also removes the unregistered depth border.
BTS_NYU_CROP = (45, 472, 43, 608)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; ranges are (low, high) of uniform draws, None disables a step."""

    # Defaults keep the whole frame, so the pixels-per-radian the model sees in training are
    # those of a whole test frame (see `model_focal_px`); BTS's own recipe is
    # border_crop=BTS_NYU_CROP, crop_size=(416, 544).
    border_crop: tuple[int, int, int, int] | None = None  # only on 480×640 inputs
    rotate_degrees: float = 2.5
    crop_size: tuple[int, int] | None = None  # (height, width); skipped if image smaller
    flip_prob: float = 0.5
    color_prob: float = 0.5  # BTS applies gamma, brightness and colour together, half the time
    gamma: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = (0.75, 1.25)  # BTS NYU range (KITTI uses 0.9–1.1)
    color: tuple[float, float] = (0.9, 1.1)

    @classmethod
    def from_mapping(cls, data: Mapping) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; known: {sorted(known)}")
        # YAML gives lists; the dataclass is frozen and hashable with tuples.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def crop(
    image: np.ndarray, depth: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crop both arrays to `box` = (top, bottom, left, right)."""
    top, bottom, left, right = box
    return image[top:bottom, left:right], depth[top:bottom, left:right]


def rotate(image: np.ndarray, depth: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate both about the image centre: image bilinear, depth nearest; outside → 0."""
    height, width = depth.shape
    # cv2 works in pixel-centre coordinates, so the geometric centre is ((W-1)/2, (H-1)/2).
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    kwargs = {"dsize": (width, height), "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    image = cv2.warpAffine(image, matrix, flags=cv2.INTER_LINEAR, **kwargs)
    depth = cv2.warpAffine(depth, matrix, flags=cv2.INTER_NEAREST, **kwargs)
    return image, depth


_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def jitter_colors(
    image: np.ndarray, gamma: float, brightness: float, color: np.ndarray
) -> np.ndarray:
    """BTS `augment_image`: x**gamma, ×brightness, ×per-channel colour, clipped; uint8 in/out.

    A uint8 image has 256 levels per channel, so the whole map is a 256×3 lookup table
    applied by ``cv2.LUT`` (measured ~50× faster than float ``np.power`` on 480×640).
    """
    scale = brightness * np.asarray(color, dtype=np.float64).reshape(1, 3)
    levels = np.power(_LEVELS, gamma)[:, None] * scale  # 256×3
    lut = (np.clip(levels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image), lut.reshape(256, 1, 3))


class Augmentation:
    """Callable `(image H×W×3 uint8, depth H×W float32, rng) -> (image, depth)`.

    Deterministic given the numpy Generator; the inputs are not modified.
    """

    def __init__(self, config: AugmentConfig | Mapping | None = None) -> None:
        if config is None:
            config = AugmentConfig()
        elif not isinstance(config, AugmentConfig):
            config = AugmentConfig.from_mapping(config)
        self.config = config

    def __call__(
        self, image: np.ndarray, depth: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != depth.shape:
            raise ValueError(
                f"expected H×W×3 image and H×W depth, got {image.shape} and {depth.shape}"
            )
        depth = depth.astype(np.float32, copy=False)
        if cfg.border_crop is not None and depth.shape == NYU_SIZE:
            image, depth = crop(image, depth, cfg.border_crop)
        if cfg.rotate_degrees > 0:
            angle = float(rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees))
            image, depth = rotate(image, depth, angle)
        if cfg.crop_size is not None:
            crop_h, crop_w = cfg.crop_size
            height, width = depth.shape
            if crop_h <= height and crop_w <= width:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
                image, depth = crop(image, depth, (top, top + crop_h, left, left + crop_w))
        if rng.random() < cfg.flip_prob:
            # cv2.flip writes a contiguous copy (a reversed view would be copied later anyway).
            image, depth = cv2.flip(image, 1), cv2.flip(depth, 1)
        if rng.random() < cfg.color_prob:
            image = jitter_colors(
                image,
                gamma=float(rng.uniform(*cfg.gamma)),
                brightness=float(rng.uniform(*cfg.brightness)),
                color=rng.uniform(*cfg.color, size=3),
            )
        # Crops are views; torch.from_numpy needs contiguous, owned-stride arrays.
        return np.ascontiguousarray(image), np.ascontiguousarray(depth)


def model_focal_px(
    config: AugmentConfig | None,
    frame_hw: tuple[int, int],
    model_hw: tuple[int, int],
    focal_px: float,
) -> tuple[float, float]:
    """(fy, fx) in model-input pixels of a training sample after ``config``'s crops and the
    squash of what remains to ``model_hw``. At test time a whole ``frame_hw`` frame is squashed
    (``config=None``); a model that reads metric depth from apparent size needs both to agree.
    """
    height, width = frame_hw
    if config is not None:
        if config.border_crop is not None and tuple(frame_hw) == NYU_SIZE:
            top, bottom, left, right = config.border_crop
            height, width = bottom - top, right - left
        if (
            config.crop_size is not None
            and config.crop_size[0] <= height
            and config.crop_size[1] <= width
        ):
            height, width = config.crop_size
    return focal_px * model_hw[0] / height, focal_px * model_hw[1] / width
