"""Build ``rosbags`` message objects (Image, CameraInfo) from numpy, for writing bags.

These are the rosbags dataclasses of the Kilted typestore, not rclpy messages, so bags can be
written on machines without ROS. The node's codec (``image_codec``) decodes what is built
here; REP 118 depth conventions are the same (32FC1 metres, NaN invalid).
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = ["camera_info_message", "header", "image_message", "serialize", "typestore"]

#: The typestore used to write bags and to read bags without embedded definitions.
DEFAULT_STORE = Stores.ROS2_KILTED

#: Array dtype and channel count → ROS encoding, for the layouts bags written here need.
_ENCODING_OF = {
    (np.dtype(np.uint8), 3): "rgb8",
    (np.dtype(np.uint8), 1): "mono8",
    (np.dtype(np.uint16), 1): "16UC1",
    (np.dtype(np.float32), 1): "32FC1",
}


@functools.cache
def typestore() -> Typestore:
    """The ROS 2 Kilted message definitions (sensor_msgs, std_msgs, geometry_msgs, ...)."""
    return get_typestore(DEFAULT_STORE)


def _type(name: str) -> Any:
    return typestore().types[name]


def header(stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with the stamp split into sec / nanosec."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    time = _type("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)
    return _type("std_msgs/msg/Header")(stamp=time, frame_id=frame_id)


def image_message(array: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` holding ``array``: H×W×3 uint8 → rgb8, H×W uint8 → mono8,
    H×W uint16 → 16UC1 (millimetres), H×W float32 → 32FC1 (metres). Native byte order."""
    array = np.ascontiguousarray(array)
    channels = array.shape[2] if array.ndim == 3 else 1
    encoding = _ENCODING_OF.get((array.dtype, channels)) if array.ndim in (2, 3) else None
    if encoding is None:
        raise ValueError(f"no image encoding for a {array.dtype} array of shape {array.shape}")
    height, width = array.shape[:2]
    return _type("sensor_msgs/msg/Image")(
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"),
        step=width * channels * array.dtype.itemsize,
        data=array.reshape(-1).view(np.uint8),
    )


def camera_info_message(
    intrinsics: dict[str, float], width: int, height: int, stamp_ns: int, frame_id: str
) -> Any:
    """``sensor_msgs/CameraInfo`` of a rectified pinhole camera (no distortion).

    ``intrinsics`` has fx, fy, cx, cy in pixels of the ``width``×``height`` image; K and P
    carry them, R is identity and D is empty (plumb_bob with no coefficients).
    """
    fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy"))
    roi = _type("sensor_msgs/msg/RegionOfInterest")(
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return _type("sensor_msgs/msg/CameraInfo")(
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(0, dtype=np.float64),
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def serialize(message: Any) -> bytes:
    """CDR bytes of a rosbags message, ready for ``Writer.write``."""
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))
