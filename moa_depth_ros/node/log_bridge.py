"""This package's Python ``logging`` records into the node's ROS logger.

The inference backends say what they notice with ``logging`` (no ROS below the node layer):
"model.onnx is an int8 graph for OpenVINO (backend openvino runs it faster)", "TensorRT engine
ready in 41.2 s". Without a handler Python's last-resort printer writes the bare text to stderr,
outside the ROS log files and console format. While a node runs, :func:`install` routes every
record of the ``moa_depth_ros`` loggers (INFO and above) through the node's ROS logger instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["PACKAGE_LOGGER", "RosLogHandler", "install"]

PACKAGE_LOGGER = "moa_depth_ros"


class RosLogHandler(logging.Handler):
    """Hands each record to ``ros_logger`` (an rclpy logger: ``info``/``warning``/``error``) at
    the matching severity."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def install(ros_logger: Any) -> Callable[[], None]:
    """Route the package's records to ``ros_logger``; returns the function that undoes it."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = RosLogHandler(ros_logger)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)

    def remove() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    return remove
