"""One background thread that processes the newest frames of the slots (plain Python, no ROS).

A dedicated thread rather than an executor timer: it wakes the moment a frame arrives (a timer
would add up to one period of latency), and inference never occupies an executor thread, so
parameter and lifecycle services stay responsive while the model runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from moa_depth_ros.node.slots import FrameSlots

__all__ = ["InferenceWorker"]

T = TypeVar("T")

#: How often an idle worker re-checks for stop requests (s); close() wakes it sooner anyway.
_POLL_S = 0.5


class InferenceWorker(Generic[T]):
    """Calls ``process(batch)`` for each ``{camera: newest frame}`` the slots give, one batch
    at a time.

    An exception from ``process`` goes to ``on_error`` and the loop carries on: one bad frame
    must not stop the node. ``stop`` closes the slots and joins the thread.
    """

    def __init__(
        self,
        slots: FrameSlots[T],
        process: Callable[[dict[Hashable, T]], None],
        on_error: Callable[[BaseException], None],
        name: str = "depth-inference",
    ) -> None:
        self._slots = slots
        self._process = process
        self._on_error = on_error
        self._name = name
        self._thread: threading.Thread | None = None
        # One stop event per thread: a thread still finishing its last frame after stop() must
        # never see a later start() clear its stop request (two threads would then infer).
        self._stopping = threading.Event()

    def start(self) -> None:
        if self.running:
            return
        if self._thread is not None:
            # A stopped thread may still be finishing its last frame: wait for it (at most one
            # inference), so there is never more than one thread calling the estimator.
            self._thread.join()
        self._stopping = threading.Event()
        self._slots.open()
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop after the current item; False if the thread is still busy after ``timeout``."""
        self._stopping.set()
        self._slots.close()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            item = self._slots.take(timeout=_POLL_S)
            if item is None:
                continue
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - any failure of one frame is survivable
                self._on_error(exc)
            # Let go of the frame now, not when the next one arrives: a raw frame is a view of
            # its message, and a huge one (8000×6000: 144 MB) stayed resident until then.
            item = None
