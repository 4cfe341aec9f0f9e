"""What to take from a rosbag for training: the colour topic, the depth topic registered to it
(none for a teacher's labels of RGB-only bags), the anchor topic a teacher is metricized with,
the camera_info, and how the messages pair (the ``data.*`` bag keys)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CACHE_VERSION", "BagDataError", "BagSource", "sibling_camera_info"]

#: Bumped whenever what the frame cache holds changes, so old cache entries are not read.
CACHE_VERSION = 2


class BagDataError(ValueError):
    """A bag that cannot be trained on (missing topics, no pairs, sizes); one line."""


def sibling_camera_info(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport's convention):
    ``/camera/image_raw`` and ``/camera/image_raw/compressed`` → ``/camera/camera_info``."""
    base = image_topic.removesuffix("/compressed").rstrip("/")
    parent = base.rsplit("/", 1)[0] if "/" in base else ""
    return f"{parent}/camera_info"


@dataclass(frozen=True)
class BagSource:
    """Which topics of a bag to train on and how to pair them. The values are checked where
    the config is read (``moa_depth_train.config.DataConfig``).

    Frames are the colour images paired one to one with ``depth_topic`` by header stamp, or
    every colour image when there is no depth topic; every ``stride``-th of them is kept. An
    ``anchor_topic`` is paired with the kept frames the same way (a frame may have none)."""

    image_topic: str
    depth_topic: str | None
    camera_info_topic: str | None = None  # None: the image topic's sibling camera_info
    focal: float | None = None  # px of the native image; overrides camera_info
    slop_ms: float = 20.0
    stride: int = 1
    anchor_topic: str | None = None  # sparse metric depth for a teacher's anchoring

    @property
    def info_topic(self) -> str:
        return self.camera_info_topic or sibling_camera_info(self.image_topic)

    def cache_key(self) -> dict[str, Any]:
        """What decides the cached frames (focal is applied when loading, not cached). Without
        an anchor topic the key is what it was before anchor topics existed: entries stay."""
        fields = asdict(self)
        if fields["anchor_topic"] is None:
            del fields["anchor_topic"]
        return {"version": CACHE_VERSION, **fields, "focal": None, "info": self.info_topic}
