"""A one-slot "latest item" mailbox between ROS callbacks and the inference worker.

The node must never queue frames (ros.md §2, opendr #275: a queue of 10 means output that is
seconds stale). Subscription callbacks ``put`` the newest decoded frame; if the worker has not
taken the previous one yet it is replaced and counted as dropped. ``put`` never blocks on the
worker, so a slow model can never back up the executor.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LatestMailbox"]

T = TypeVar("T")


class LatestMailbox(Generic[T]):
    """Thread-safe single slot holding only the newest item.

    ``take`` blocks (up to a timeout) until an item is there; ``close`` wakes every waiting
    ``take`` so a worker thread can exit promptly, and ``open`` re-arms the mailbox.
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took (a dropped frame).

        Items put while the mailbox is closed are discarded (and not counted as drops: nothing
        would have processed them).
        """
        with self._ready:
            if self._closed:
                return False
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Remove and return the newest item; None on timeout or when the mailbox is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._closed, timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

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
