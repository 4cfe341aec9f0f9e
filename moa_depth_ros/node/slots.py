"""Newest-frame slots between ROS callbacks and the inference worker, one slot per camera.

The node must never queue frames (docs/ros.md, opendr #275: a queue of 10 means output that is
seconds stale). Subscription callbacks ``put`` the newest decoded frame of their camera; if the
worker has not taken that camera's previous one yet it is replaced and counted as dropped.
``put`` never blocks on the worker, so a slow model can never back up the executor. The worker
``take``s the newest frame of **every** camera that has one, as one batch: a camera that
publishes faster cannot starve the others, and one that stops simply has nothing in its slot.

When the input outpaces the model, the frame a freed worker finds has already waited for part
of a period. With ``prefer_fresh``, when every waiting frame's camera is due to deliver its next
frame sooner than that frame has already waited, ``take`` waits for the earliest next frame
(each such wait gives up less output time than it saves in latency). Once one frame goes, every
waiting frame goes with it: a batch of two costs about 0.77 of two single forwards (ViT-B/32 on
2 CPU cores, 640×480), so a frame left for its fresher successor would cost the other cameras
more than it saves. The input period is the median of each camera's recent arrival intervals;
irregular input (a bag replay that pauses) costs at most a quarter period beyond it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["FrameSlots"]

T = TypeVar("T")

#: Arrival intervals kept for the input period estimate (a median: robust to single gaps).
_PERIOD_WINDOW = 15


@dataclass
class _Slot(Generic[T]):
    item: T | None = None
    last_put: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=_PERIOD_WINDOW))

    def fresher_due_in(self, now: float) -> float | None:
        """Seconds until this camera's next frame, when waiting for it beats taking this one."""
        if self.item is None or self.last_put is None or len(self.intervals) < 3:
            return None
        period = statistics.median(self.intervals)
        waited = now - self.last_put
        due_in = period - waited
        return due_in if 0.0 < due_in < waited else None


class FrameSlots(Generic[T]):
    """Thread-safe newest-item slots, one per key (camera).

    ``take`` blocks (up to a timeout) until some slot holds an item and returns {key: item} for
    the ones taken; ``close`` wakes every waiting ``take`` (it returns None) so a worker thread
    can exit promptly, and ``open`` re-arms the slots.
    """

    def __init__(
        self,
        keys: Iterable[Hashable],
        prefer_fresh: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefer_fresh = prefer_fresh  # a plain attribute: the node flips it at runtime
        self._clock = clock
        self._slots: dict[Hashable, _Slot[T]] = {key: _Slot() for key in keys}
        if not self._slots:
            raise ValueError("FrameSlots needs at least one key")
        self._closed = False
        self._ready = threading.Condition()
        self._puts = 0  # tells a waiting take that a newer item arrived

    def put(self, key: Hashable, item: T) -> bool:
        """Store ``item`` as ``key``'s newest; True when it replaced an item nobody took (a
        dropped frame). Items put while closed are discarded (and not counted as drops)."""
        with self._ready:
            if self._closed:
                return False
            slot = self._slots[key]
            now = self._clock()
            if slot.last_put is not None:
                slot.intervals.append(now - slot.last_put)
            slot.last_put, self._puts = now, self._puts + 1
            replaced = slot.item is not None
            slot.item = item
            self._ready.notify()
            return replaced

    def take(self, timeout: float | None = None) -> dict[Hashable, T] | None:
        """The newest item of every slot that has one (see module doc); None on timeout or
        when closed."""
        with self._ready:
            self._ready.wait_for(self._any_or_closed, timeout)
            if self.prefer_fresh:
                self._wait_while_every_frame_prefers_a_fresher_one()
            if self._closed:
                return None
            batch = {}
            for key, slot in self._slots.items():
                if slot.item is not None:
                    batch[key], slot.item = slot.item, None
            return batch or None

    def _wait_while_every_frame_prefers_a_fresher_one(self) -> None:
        """With the lock held: wait for the earliest next frame while every present frame's
        camera is about to deliver a fresher one (at most a quarter period past its due)."""
        while not self._closed:
            now = self._clock()
            present = [slot for slot in self._slots.values() if slot.item is not None]
            due = [(d, slot) for slot in present if (d := slot.fresher_due_in(now)) is not None]
            if not present or len(due) < len(present):
                return
            wait, slot = min(due, key=lambda entry: entry[0])
            grace = statistics.median(slot.intervals) / 4
            if not self._ready.wait_for(self._newer_than(self._puts), wait + grace):
                return  # the next frame did not come: take what is there

    def _newer_than(self, puts: int) -> Callable[[], bool]:
        return lambda: self._puts != puts or self._closed

    def _any_or_closed(self) -> bool:
        return self._closed or any(slot.item is not None for slot in self._slots.values())

    def close(self) -> None:
        """Discard pending items and wake all waiting ``take`` calls (they return None)."""
        with self._ready:
            self._closed = True
            for slot in self._slots.values():
                slot.item = None
            self._ready.notify_all()

    def open(self) -> None:
        """Accept items again after ``close``."""
        with self._ready:
            self._closed = False
