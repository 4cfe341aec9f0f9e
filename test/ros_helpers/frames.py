"""Deterministic test frames, camera_info and malformed messages for the node tests.

Shared by the publisher process and the test process, so both know what a stamp's image and
intrinsics are without sending them twice.
"""

from __future__ import annotations

import random
import threading

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from moa_depth_ros.msgs.image_codec import (
    ImageDecodeError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
    set_uint8_data,
)

FRAME_ID = "camera_color_optical_frame"
_stamp_lock = threading.Lock()
_next_stamp = [1_700_000_000 * 10**9]


def new_stamps(count: int, spacing_s: float = 0.1) -> list[int]:
    """Unused, increasing stamps (each test gets its own, so tests never see each other's
    outputs)."""
    with _stamp_lock:
        start = _next_stamp[0]
        _next_stamp[0] += int((count + 10) * spacing_s * 1e9) + 10**9
    return [start + int(i * spacing_s * 1e9) for i in range(count)]


def header(stamp_ns: int, frame_id: str = FRAME_ID) -> Header:
    return Header(
        stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id,
    )


def pattern_rgb(stamp_ns: int, width: int, height: int) -> np.ndarray:
    """A smooth colour pattern plus noise, different for every stamp."""
    rng = np.random.default_rng(stamp_ns % (2**32))
    u = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    v = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 255)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[..., 0] = u + 0 * v
    rgb[..., 1] = v + 0 * u
    rgb[..., 2] = (u + v + phase) % 256
    rgb += rng.normal(0, 8, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the test camera at this resolution (deliberately fx != fy)."""
    scale = width / 640.0
    return 500.0 * scale, 505.0 * scale, width / 2 + 3.0, height / 2 - 2.0


def camera_info(stamp_ns: int, width: int, height: int, frame_id: str = FRAME_ID) -> CameraInfo:
    fx, fy, cx, cy = intrinsics(width, height)
    return CameraInfo(
        header=header(stamp_ns, frame_id),
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def image_msg(stamp_ns: int, width: int, height: int, frame_id: str = FRAME_ID) -> Image:
    return rgb_to_image_msg(pattern_rgb(stamp_ns, width, height), header(stamp_ns, frame_id))


def compressed_msg(
    stamp_ns: int, width: int, height: int, frame_id: str = FRAME_ID
) -> CompressedImage:
    bgr = cv2.cvtColor(pattern_rgb(stamp_ns, width, height), cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    msg = CompressedImage(header=header(stamp_ns, frame_id), format="jpeg")
    set_uint8_data(msg, jpeg)
    return msg


def png_bomb(side: int) -> CompressedImage:
    """A genuine side×side grey PNG: tiny on the wire, side² bytes once decoded."""
    ok, png = cv2.imencode(
        ".png", np.full((side, side), 128, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )
    assert ok
    msg = CompressedImage(header=header(1), format="png")
    set_uint8_data(msg, png)
    return msg


# --------------------------------------------------------------------------- malformed input


def _raw(
    encoding: str, width: int, height: int, step: int, nbytes: int, rng: random.Random
) -> Image:
    msg = Image(header=header(0), encoding=encoding, width=width, height=height, step=step)
    set_uint8_data(msg, np.frombuffer(rng.randbytes(nbytes), np.uint8))
    return msg


def _wrong_step(rng: random.Random) -> Image:
    w, h = rng.randint(2, 64), rng.randint(1, 48)
    step = rng.randint(0, 3 * w - 1)
    return _raw("rgb8", w, h, step, 3 * w * h, rng)


def _truncated(rng: random.Random) -> Image:
    w, h = rng.randint(2, 64), rng.randint(2, 48)
    return _raw("bgr8", w, h, 3 * w, rng.randint(0, 3 * w * h - 1), rng)


def _unknown_encoding(rng: random.Random) -> Image:
    encoding = rng.choice(["", "rgb9", "RGB8", "jpeg", "8UC3", "bayer_rggb8", "\x00", "x" * 40])
    return _raw(encoding, 8, 8, 24, 192, rng)


def _zero_size(rng: random.Random) -> Image:
    w, h = rng.choice([(0, 8), (8, 0), (0, 0)])
    return _raw("rgb8", w, h, 3 * w, rng.randint(0, 64), rng)


def _huge(rng: random.Random) -> Image:
    w = rng.choice([100_000, 2**31, 2**32 - 1, 8193])
    h = rng.choice([100_000, 2**31, 8193, 1])
    return _raw("rgb8", w, h, min(3 * w, 2**32 - 1), rng.randint(0, 256), rng)


def _depth_as_colour(rng: random.Random) -> Image:
    return _raw(rng.choice(["32FC1", "16UC1"]), 8, 8, 32, 256, rng)


def _odd_yuv(rng: random.Random) -> Image:
    w = 2 * rng.randint(1, 16) + 1
    return _raw("yuv422", w, 4, 2 * w, 8 * w, rng)


_RAW_KINDS = (_wrong_step, _truncated, _unknown_encoding, _zero_size, _huge, _depth_as_colour,
              _odd_yuv)  # fmt: skip


def malformed_images(count: int, seed: int = 0) -> list[Image]:
    """``count`` sensor_msgs/Image that the node's decoder must reject, all kinds in turn."""
    rng = random.Random(seed)
    return [_RAW_KINDS[i % len(_RAW_KINDS)](rng) for i in range(count)]


def _garbage_jpeg(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randint(1, 2000))
    if kind == 2:  # JPEG start-of-image marker, then noise
        return b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(0, 2000))
    if kind == 3:  # PNG signature, then noise
        return b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(0, 500))
    good = compressed_msg(1, 32, 24).data.tobytes()
    return good[: rng.randint(0, 40)]  # headers only, no scan data


def garbage_compressed(count: int, seed: int = 0) -> list[CompressedImage]:
    """``count`` CompressedImage payloads cv2 cannot decode (checked here, so exact)."""
    rng = random.Random(seed)
    out: list[CompressedImage] = []
    while len(out) < count:
        msg = CompressedImage(header=header(0), format=rng.choice(["jpeg", "png", "rgb8; jpeg"]))
        set_uint8_data(msg, np.frombuffer(_garbage_jpeg(rng), np.uint8))
        if not decodes(msg):
            out.append(msg)
    return out


def decodes(msg: Image | CompressedImage) -> bool:
    """Whether the node's decoder accepts ``msg``."""
    decode = compressed_msg_to_rgb if isinstance(msg, CompressedImage) else image_msg_to_rgb
    try:
        decode(msg)
    except ImageDecodeError:
        return False
    return True
