"""Augmentation keeps image and depth aligned and invents no depth values."""

import cv2
import numpy as np
import pytest

from moa_depth_train.augment import (
    BTS_NYU_CROP,
    Augmentation,
    AugmentConfig,
    jitter_colors,
    model_focal_px,
)

# Depth encodes the source pixel exactly (x in hundredths, y in hundred-thousandths), so a
# nearest-resampled depth value tells which input pixel landed where.
X_STEP, Y_STEP, OFFSET = 0.01, 1e-5, 0.5


def position_pattern(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    depth = (OFFSET + x * X_STEP + y * Y_STEP).astype(np.float32)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    # Image channels: linear ramps of the same position (so bilinear resampling stays exact).
    image[..., 0] = np.round(x * 255 / (width - 1))
    image[..., 1] = np.round(y * 255 / (height - 1))
    image[..., 2] = 128
    return image, depth


def decode_depth(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    value = depth.astype(np.float64) - OFFSET
    x = np.floor(value / X_STEP + 1e-3)
    y = np.round((value - x * X_STEP) / Y_STEP)
    return x, y


def check_aligned(image, depth, src_height, src_width, offset=(0, 0)):
    """Image ramps agree with the depth-decoded source position on interior valid pixels."""
    valid = depth > 0
    # Bilinear image pixels next to the zero border mix in black: compare away from it.
    interior = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    interior[[0, -1], :] = interior[:, [0, -1]] = False
    x, y = decode_depth(depth)
    x, y = x + offset[1], y + offset[0]
    # One level ≈ 0.4–0.6 source px; nearest vs bilinear differ by ≤ 0.5 px per axis.
    red = x * 255 / (src_width - 1)
    green = y * 255 / (src_height - 1)
    assert interior.sum() > 0.8 * depth.size
    assert np.abs(image[..., 0][interior] - red[interior]).max() <= 2.0
    assert np.abs(image[..., 1][interior] - green[interior]).max() <= 2.0
    return x, y, valid


GEOMETRY_ONLY = AugmentConfig(crop_size=(96, 128), color_prob=0.0)


@pytest.mark.parametrize("seed", range(12))
def test_geometry_keeps_image_and_depth_aligned(seed):
    image, depth = position_pattern(120, 160)
    out_image, out_depth = Augmentation(GEOMETRY_ONLY)(image, depth, np.random.default_rng(seed))
    assert out_image.shape == (96, 128, 3) and out_depth.shape == (96, 128)
    assert out_image.dtype == np.uint8 and out_depth.dtype == np.float32
    check_aligned(out_image, out_depth, 120, 160)
    # Nearest resampling: every valid output depth is one of the input depths.
    assert np.isin(out_depth[out_depth > 0], depth).all()


def test_flip_and_rotation_really_happen():
    image, depth = position_pattern(120, 160)
    flipped = rotated = 0
    for seed in range(12):
        _, out = Augmentation(GEOMETRY_ONLY)(image, depth, np.random.default_rng(seed))
        x, y = decode_depth(out)
        row = out.shape[0] // 2
        flipped += x[row, 10] > x[row, -10]
        rotated += y[row, 10] != y[row, -10]
    assert 0 < flipped < 12
    assert rotated >= 10


def test_rotation_border_is_invalid_depth_and_black_image():
    image, depth = position_pattern(120, 160)
    config = AugmentConfig(rotate_degrees=2.5, crop_size=None, flip_prob=0.0, color_prob=0.0)
    # Find a seed with a clearly non-zero angle so corners leave the image.
    out_image, out_depth = Augmentation(config)(image, depth, np.random.default_rng(3))
    corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
    assert any(out_depth[c] == 0 for c in corners)
    for c in corners:
        if out_depth[c] == 0:
            assert out_image[c].max() <= 128  # black or blended with black
    check_aligned(out_image, out_depth, 120, 160)


def test_bts_border_crop_and_random_crop():
    image, depth = position_pattern(480, 640)
    config = AugmentConfig(
        border_crop=BTS_NYU_CROP, crop_size=(416, 544), color_prob=0.0, rotate_degrees=0.0,
        flip_prob=0.0,
    )  # fmt: skip
    out_image, out_depth = Augmentation(config)(image, depth, np.random.default_rng(0))
    assert out_depth.shape == (416, 544)
    x, y = decode_depth(out_depth)
    top, bottom, left, right = BTS_NYU_CROP  # BTS: PIL box (43, 45, 608, 472)
    assert (top, bottom, left, right) == (45, 472, 43, 608)
    assert x.min() >= left and x.max() < right and y.min() >= top and y.max() < bottom
    check_aligned(out_image, out_depth, 480, 640)


def test_defaults_keep_the_whole_frame_so_train_and_test_focal_agree():
    """The default augmentation crops nothing: the focal length in model pixels is the test
    frame's within 2% (BTS crops give 518.86·224/416 = 279 px vs 242 px at test)."""
    image, depth = position_pattern(480, 640)
    config = AugmentConfig(color_prob=0.0, rotate_degrees=0.0, flip_prob=0.0)
    out_image, out_depth = Augmentation(config)(image, depth, np.random.default_rng(0))
    np.testing.assert_array_equal(out_depth, depth)
    test = model_focal_px(None, (480, 640), (224, 224), 518.8579)
    train = model_focal_px(config, (480, 640), (224, 224), 518.8579)
    assert all(abs(a / b - 1) <= 0.02 for a, b in zip(train, test, strict=True))
    assert test[0] == pytest.approx(518.8579 * 224 / 480)
    bts = AugmentConfig(border_crop=BTS_NYU_CROP, crop_size=(416, 544))
    fy_bts, _ = model_focal_px(bts, (480, 640), (224, 224), 518.8579)
    assert fy_bts == pytest.approx(279.4, abs=0.1) and fy_bts / test[0] > 1.15


def test_border_crop_only_on_nyu_size_and_large_crop_skipped():
    image, depth = position_pattern(100, 120)
    config = AugmentConfig(
        border_crop=BTS_NYU_CROP, crop_size=(416, 544), rotate_degrees=0, flip_prob=0
    )
    out_image, out_depth = Augmentation(config)(image, depth, np.random.default_rng(0))
    assert out_depth.shape == (100, 120)  # smaller than 416×544: crop skipped
    np.testing.assert_array_equal(out_depth, depth)


def test_deterministic_given_generator():
    image, depth = position_pattern(120, 160)
    augment = Augmentation({"crop_size": [96, 128]})
    a = augment(image, depth, np.random.default_rng(7))
    b = augment(image, depth, np.random.default_rng(7))
    c = augment(image, depth, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) or not np.array_equal(a[0], c[0])


def test_photometric_jitter_leaves_depth_and_stays_in_range():
    image, depth = position_pattern(120, 160)
    config = AugmentConfig(rotate_degrees=0, crop_size=None, flip_prob=0, color_prob=1.0)
    out_image, out_depth = Augmentation(config)(image, depth, np.random.default_rng(1))
    np.testing.assert_array_equal(out_depth, depth)
    assert out_image.dtype == np.uint8 and not np.array_equal(out_image, image)
    np.testing.assert_array_equal(jitter_colors(image, 1.0, 1.0, np.ones(3)), image)
    bright = jitter_colors(image, 1.0, 1.25, np.ones(3))
    assert bright.max() == 255 and (bright >= image).all()


def test_lookup_table_jitter_equals_the_float_formula():
    """BTS: clip(x**gamma · brightness · colour[c], 0, 1), x = v/255, rounded to uint8."""
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    gamma, brightness, color = 0.93, 1.17, np.array([0.95, 1.08, 1.01])
    x = image.astype(np.float64) / 255.0
    expected = (np.clip(x**gamma * brightness * color, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(jitter_colors(image, gamma, brightness, color), expected)


def test_bad_config_and_shapes():
    with pytest.raises(ValueError, match="unknown augmentation"):
        Augmentation({"rotation": 3})
    with pytest.raises(ValueError, match="H×W×3"):
        Augmentation()(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32), None)
