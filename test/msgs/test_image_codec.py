"""Image codec: round trips per encoding, REP 118 depth semantics, malformed-message handling."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from moa_depth_ros.msgs.image_codec import (
    ENCODINGS,
    ImageDecodeError,
    array_to_image_msg,
    compressed_msg_to_rgb,
    depth_to_image_msg,
    encoded_image_size,
    image_msg_to_array,
    image_msg_to_rgb,
    rgb_to_image_msg,
    set_uint8_data,
)
from moa_depth_ros.visualize import colorize_depth

RNG = np.random.default_rng(0)
H, W = 6, 10


def header() -> Header:
    h = Header(frame_id="camera_optical")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Build an Image by hand (independent of the encoder), with ``pad`` bytes after each row."""
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(encoding=encoding, height=pixels.shape[0], width=pixels.shape[1])
    msg.step, msg.is_bigendian = padded.shape[1], int(bigendian)
    msg.data = array.array("B", padded.tobytes())
    return msg


def rgb_image(h: int = H, w: int = W) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- colour decoding


@pytest.mark.parametrize("pad", [0, 3, 8])
@pytest.mark.parametrize(
    "encoding,make",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_decode_to_rgb(encoding, make, pad):
    rgb = rgb_image()
    out = image_msg_to_rgb(raw_msg(make(rgb), encoding, pad))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_expands_to_grey_rgb(pad):
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    out = image_msg_to_rgb(raw_msg(grey, "mono8", pad))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 1, 4])  # odd padding makes the 16-bit view unaligned
def test_mono16_keeps_top_byte(bigendian, pad):
    grey16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    out = image_msg_to_rgb(raw_msg(grey16, "mono16", pad, bigendian))
    np.testing.assert_array_equal(out, np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_array_is_native(bigendian):
    grey16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    out = image_msg_to_array(raw_msg(grey16, "mono16", 2, bigendian))
    assert out.dtype == np.uint16 and out.dtype.isnative and out.flags.c_contiguous
    np.testing.assert_array_equal(out, grey16)


def bt601_yuv(rgb: np.ndarray) -> np.ndarray:
    """Studio-range BT.601 Y, U, V (what camera YUV 4:2:2 carries)."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return np.rint(np.stack([y, u, v], -1)).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
@pytest.mark.parametrize("pad", [0, 6])
def test_yuv422_decodes_source_colours(encoding, pad):
    colours = np.array(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [200, 150, 40], [20, 90, 210]],
        np.uint8,
    )
    # One colour per 4-pixel-wide block, so each chroma pair is a single colour.
    rgb = np.repeat(np.repeat(colours[None], 4, axis=1), 2, axis=0)  # 2×24×3
    yuv = bt601_yuv(rgb)
    y, u, v = yuv[..., 0], yuv[..., 1], yuv[..., 2]
    packed = np.empty(rgb.shape[:2] + (2,), np.uint8)
    if encoding in ("yuv422", "uyvy"):  # U0 Y0 V0 Y1
        packed[:, 0::2, 0], packed[:, 1::2, 0] = u[:, 0::2], v[:, 0::2]
        packed[..., 1] = y
    else:  # Y0 U0 Y1 V0
        packed[..., 0] = y
        packed[:, 0::2, 1], packed[:, 1::2, 1] = u[:, 0::2], v[:, 0::2]
    out = image_msg_to_rgb(raw_msg(packed, encoding, pad))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 4


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image_msg_round_trip(encoding):
    rgb = rgb_image()
    msg = rgb_to_image_msg(rgb, header(), encoding)
    assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, H, W, 3 * W)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
    stored = np.frombuffer(msg.data, np.uint8).reshape(H, W, 3)
    np.testing.assert_array_equal(stored, rgb if encoding == "rgb8" else rgb[..., ::-1])
    wire = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_msg_to_rgb(wire), rgb)


def test_rgb8_decode_is_zero_copy_without_padding():
    msg = raw_msg(rgb_image(), "rgb8")
    out = image_msg_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_decodes_duck_typed_messages_with_numpy_data():
    # rosbags deserializes uint8[] as a numpy array; the bag tools feed those in directly.
    rgb = rgb_image()
    msg = SimpleNamespace(
        encoding="rgb8", width=W, height=H, step=3 * W, is_bigendian=0, data=rgb.reshape(-1)
    )
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


# --------------------------------------------------------------------------- depth (REP 118)


def test_32fc1_metres_with_nan_invalid():
    depth = np.array([[1.25, np.nan, 0.0], [-2.0, np.inf, 80.5]], np.float32)
    msg = depth_to_image_msg(depth, header())
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 12, 0)
    assert msg.header.frame_id == "camera_optical"
    out = image_msg_to_array(deserialize_message(serialize_message(msg), Image))
    assert out.dtype == np.float32 and out.shape == (2, 3)
    expected = np.array([[1.25, np.nan, np.nan], [np.nan, np.inf, 80.5]], np.float32)
    np.testing.assert_array_equal(out, expected)  # NaN == NaN for assert_array_equal


def test_16uc1_millimetres_with_zero_invalid():
    depth = np.array([[1.5, np.nan, 0.0, -1.0], [70.0, 0.0001, np.inf, 0.0126]], np.float32)
    msg = depth_to_image_msg(depth, header(), "16UC1")
    assert (msg.encoding, msg.step) == ("16UC1", 8)
    mm = np.frombuffer(msg.data, np.uint16).reshape(2, 4)
    np.testing.assert_array_equal(mm, [[1500, 0, 0, 0], [65535, 1, 0, 13]])
    metres = image_msg_to_array(msg)
    assert metres.dtype == np.float32
    expected = np.array([[1.5, np.nan, np.nan, np.nan], [65.535, 0.001, np.nan, 0.013]])
    np.testing.assert_allclose(metres, expected, rtol=1e-6)


@pytest.mark.parametrize("encoding,dtype", [("32FC1", np.float32), ("16UC1", np.uint16)])
def test_big_endian_depth_decodes(encoding, dtype):
    values = np.array([[1, 2, 3], [400, 0, 6]], dtype)
    out = image_msg_to_array(raw_msg(values, encoding, pad=3, bigendian=True))
    expected = values.astype(np.float32) * (1e-3 if encoding == "16UC1" else 1)
    if encoding == "16UC1":
        expected[values == 0] = np.nan
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_array_to_image_msg_checks_layout():
    bgr = np.zeros((2, 3, 3), np.uint8)
    assert array_to_image_msg(bgr, header(), "bgr8").step == 9
    with pytest.raises(ValueError, match="does not fit 'mono16'"):
        array_to_image_msg(bgr, header(), "mono16")
    with pytest.raises(ValueError, match="unknown image encoding 'nv12'"):
        array_to_image_msg(bgr, header(), "nv12")
    with pytest.raises(ValueError, match="'mono8'"):
        depth_to_image_msg(np.ones((2, 2)), header(), "mono8")
    with pytest.raises(ValueError, match="'rgba8'"):
        rgb_to_image_msg(bgr, header(), "rgba8")


def test_set_uint8_data_stores_array_bytes():
    msg = Image()
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    set_uint8_data(msg, values)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert bytes(msg.data) == values.tobytes()


# --------------------------------------------------------------------------- malformed input


def good_fields(**overrides):
    fields = dict(encoding="rgb8", width=4, height=3, step=12, is_bigendian=0, data=bytes(36))
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize(
    "overrides,needles",
    [
        (dict(encoding="bayer_grbg42"), ["unknown image encoding", "'bayer_grbg42'"]),
        (dict(width=0), ["zero size", "0x3"]),
        (dict(height=0), ["zero size", "4x0"]),
        (dict(step=11), ["step 11", "smaller than one row", "12 B"]),
        (dict(data=bytes(35)), ["35 bytes", "36"]),
        (dict(step=13), ["36 bytes", "39"]),  # padding declared but not present
        (dict(width=9000, step=27000), ["9000x3", "exceed the maximum 8192x8192"]),
        (dict(encoding="yuv422", width=3, step=6, data=bytes(18)), ["odd width 3", "'yuv422'"]),
        (dict(encoding="32FC1", step=16, data=bytes(48)), ["'32FC1'", "not accepted"]),
        (dict(data=None), ["not a byte buffer"]),
        (dict(width="four"), ["not integers"]),
    ],
)
def test_malformed_messages_name_the_problem(overrides, needles):
    with pytest.raises(ImageDecodeError) as info:
        image_msg_to_rgb(good_fields(**overrides))
    text = str(info.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_dimension_limit_is_checked_before_the_buffer_and_is_configurable():
    # A header claiming 100000² pixels over a tiny buffer: the size limit fires first.
    huge = good_fields(width=100_000, height=100_000, step=300_000)
    with pytest.raises(ImageDecodeError, match="exceed the maximum"):
        image_msg_to_rgb(huge)
    with pytest.raises(ImageDecodeError, match="shorter than step"):
        image_msg_to_rgb(huge, max_width=10**6, max_height=10**6)
    with pytest.raises(ImageDecodeError, match="exceed the maximum 3x3"):
        image_msg_to_array(good_fields(), max_width=3, max_height=3)
    assert image_msg_to_rgb(good_fields(), max_width=4, max_height=3).shape == (3, 4, 3)


def test_random_malformed_messages_only_raise_decode_errors():
    rng = np.random.default_rng(1234)
    names = [*ENCODINGS, "", "RGB8", "bayer_rggb8", "8UC3", "nv21"]
    decoded = 0
    for _ in range(400):
        msg = SimpleNamespace(
            encoding=names[rng.integers(len(names))],
            width=int(rng.choice([0, -1, 1, 2, 3, 7, 64, 9000, 2**31])),
            height=int(rng.choice([0, -5, 1, 2, 5, 33, 10**6])),
            step=int(rng.integers(-4, 300)),
            is_bigendian=int(rng.integers(0, 2)),
            data=rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes(),
        )
        if rng.random() < 0.05:
            msg.data = [None, "text", 3.5, object()][rng.integers(4)]
        for decode in (image_msg_to_rgb, image_msg_to_array):
            try:
                out = decode(msg)
            except ImageDecodeError as exc:
                assert str(exc) and "\n" not in str(exc)
            else:
                decoded += 1
                assert out.shape[:2] == (msg.height, msg.width) and out.flags.c_contiguous
    assert decoded > 0  # the generator also produces some valid messages


# --------------------------------------------------------------------------- compressed


def test_compressed_png_is_lossless_and_jpeg_close():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (250, 10, 10)
    rgb[:, 16:32] = (10, 250, 10)
    rgb[:, 32:] = (10, 10, 250)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for fmt, ext in (("png", ".png"), ("rgb8; jpeg compressed bgr8", ".jpg")):
        ok, payload = cv2.imencode(ext, bgr)
        assert ok
        msg = CompressedImage(format=fmt)
        msg.data = array.array("B", payload.tobytes())
        out = compressed_msg_to_rgb(msg)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        tolerance = 0 if ext == ".png" else 12
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= tolerance


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty compressed image (format 'jpeg')"),
        (b"\xff\xd8garbage", "JPEG without a start-of-frame header"),
        (bytes(range(256)), "not a PNG or JPEG image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "PNG without an IHDR header"),
    ],
)
def test_compressed_garbage_raises_with_the_reason(payload, reason):
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", payload)
    with pytest.raises(ImageDecodeError) as info:
        compressed_msg_to_rgb(msg)
    assert reason in str(info.value)


def _with_dimensions(encoded: bytes, width: int, height: int) -> bytes:
    """A real PNG / JPEG whose header claims another size (what a decompression bomb does)."""
    data = bytearray(encoded)
    if data.startswith(b"\x89PNG"):
        data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
        return bytes(data)
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[sof + 5 : sof + 7], data[sof + 7 : sof + 9] = (
        height.to_bytes(2, "big"),
        width.to_bytes(2, "big"),
    )
    return bytes(data)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_oversized_compressed_images_are_rejected_before_decoding(ext, monkeypatch):
    ok, payload = cv2.imencode(ext, np.full((16, 16, 3), 128, np.uint8))
    assert ok
    assert encoded_image_size(payload.reshape(-1))[1:] == (16, 16)
    bomb = _with_dimensions(payload.tobytes(), 9000, 9000)
    assert encoded_image_size(np.frombuffer(bomb, np.uint8))[1:] == (9000, 9000)
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    msg = CompressedImage(format="png" if ext == ".png" else "jpeg")
    msg.data = array.array("B", bomb)
    with pytest.raises(ImageDecodeError, match="9000x9000 exceed the maximum 8192x8192"):
        compressed_msg_to_rgb(msg)
    assert decoded == []  # nothing was decoded


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth", "compressedDepth png", "32FC1; png"])
def test_depth_formats_are_not_colour_input(fmt):
    ok, payload = cv2.imencode(".png", np.full((8, 8), 1000, np.uint16))
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", payload.tobytes())
    with pytest.raises(ImageDecodeError, match="is a depth image"):
        compressed_msg_to_rgb(msg)


# --------------------------------------------------------------------------- colorize


def test_colorize_depth_inverse_turbo_with_black_invalid():
    depth = np.array([[0.5, 1.0, 10.0, 100.0], [np.nan, 0.0, -1.0, np.inf]], np.float32)
    bgr = colorize_depth(depth, min_depth=1.0, max_depth=10.0)
    assert bgr.shape == (2, 4, 3) and bgr.dtype == np.uint8
    turbo = cv2.applyColorMap(np.array([[255, 0]], np.uint8), cv2.COLORMAP_TURBO)[0]
    np.testing.assert_array_equal(bgr[0, :2], [turbo[0], turbo[0]])  # near, clamped
    np.testing.assert_array_equal(bgr[0, 2:], [turbo[1], turbo[1]])  # far, clamped
    np.testing.assert_array_equal(bgr[1], 0)
    # Inverse depth: 2 m (midway in 1/d between 1 m and 10 m is ~1.82 m) sits above mid-scale.
    mid = colorize_depth(np.array([[1.818]], np.float32), 1.0, 10.0)
    level = cv2.applyColorMap(np.array([[128]], np.uint8), cv2.COLORMAP_TURBO)
    assert np.abs(mid.astype(int) - level.astype(int)).max() <= 12
    with pytest.raises(ValueError):
        colorize_depth(depth, 2.0, 1.0)
