"""A one-slot "latest item" mailbox between ROS callbacks and the inference worker.

The node must never queue frames (docs/ros.md, opendr #275: a queue of 10 means output that is
seconds stale). Subscription callbacks ``put`` the newest decoded frame; if the worker has not
taken the previous one yet it is replaced and counted as dropped. ``put`` never blocks on the
worker, so a slow model can never back up the executor.

When the input outpaces the model, the frame a freed worker finds has already waited for part
of a period. With ``prefer_fresh`` the worker instead waits for the next frame when that one is
due sooner than the waiting one has already waited: each such choice gives up less output
time (idle) than it saves in latency, and p50 latency drops by about half an input period.
The input period is the median of recent arrival intervals; irregular input (a bag replay that
pauses) costs at most a quarter period beyond the expected arrival.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LatestMailbox"]

T = TypeVar("T")

#: Arrival intervals kept for the input period estimate (a median: robust to single gaps).
_PERIOD_WINDOW = 15


class LatestMailbox(Generic[T]):
    """Thread-safe single slot holding only the newest item.

    ``take`` blocks (up to a timeout) until an item is there; ``close`` wakes every waiting
    ``take`` so a worker thread can exit promptly, and ``open`` re-arms the mailbox.
    """

    def __init__(
        self, prefer_fresh: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.prefer_fresh = prefer_fresh  # a plain attribute: the node flips it at runtime
        self._clock = clock
        self._item: T | None = None
        self._closed = False
        self._ready = threading.Condition()
        self._last_put: float | None = None
        self._puts = 0  # tells a waiting take that a newer item arrived
        self._intervals: deque[float] = deque(maxlen=_PERIOD_WINDOW)

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took (a dropped frame).

        Items put while the mailbox is closed are discarded (and not counted as drops: nothing
        would have processed them).
        """
        with self._ready:
            if self._closed:
                return False
            now = self._clock()
            if self._last_put is not None:
                self._intervals.append(now - self._last_put)
            self._last_put, self._puts = now, self._puts + 1
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Remove and return the newest item; None on timeout or when the mailbox is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._item is not None and self.prefer_fresh:
                self._wait_for_fresher()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def _wait_for_fresher(self) -> None:
        """Called with the lock held and an item present: maybe wait for the next put."""
        if len(self._intervals) < 3:
            return
        period = statistics.median(self._intervals)
        waited = self._clock() - self._last_put
        due_in = period - waited
        if 0.0 < due_in < waited:
            puts = self._puts
            self._ready.wait_for(lambda: self._puts != puts or self._closed, due_in + period / 4)

    def close(self) -> None:
        """Discard any pending item and wake all waiting ``take`` calls (they return None)."""
        with self._ready:
            self._closed = True
            self._item = None
            self._ready.notify_all()

    def open(self) -> None:
        """Accept items again after ``close``."""
        with self._ready:
            self._closed = False
