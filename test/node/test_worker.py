"""The inference worker thread: survives failing frames, never runs twice."""

from __future__ import annotations

import threading
import time

from moa_depth_ros.node.mailbox import LatestMailbox
from moa_depth_ros.node.worker import InferenceWorker


def test_worker_survives_a_failing_frame_and_stops() -> None:
    box: LatestMailbox[int] = LatestMailbox()
    done, errors = [], []
    processed = threading.Event()

    def process(item: int) -> None:
        if item == 0:
            raise RuntimeError("bad frame")
        done.append(item)
        processed.set()

    worker = InferenceWorker(box, process, errors.append)
    worker.start()
    box.put(0)
    time.sleep(0.1)
    box.put(7)
    assert processed.wait(2)
    assert worker.stop(2) and not worker.running
    assert done == [7] and [str(e) for e in errors] == ["bad frame"]


def test_worker_restarted_while_busy_never_runs_two_threads() -> None:
    box: LatestMailbox[int] = LatestMailbox()
    busy, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    concurrent, seen = [], []

    def process(item: int) -> None:
        if not lock.acquire(blocking=False):
            concurrent.append(item)  # a second thread got here while the first was busy
            return
        try:
            seen.append(item)
            if item == 1:
                busy.set()
                release.wait(5)
        finally:
            lock.release()

    worker = InferenceWorker(box, process, lambda exc: None)
    worker.start()
    box.put(1)
    assert busy.wait(2)
    assert not worker.stop(timeout=0.05)  # still inside the slow frame
    threading.Timer(0.2, release.set).start()
    worker.start()  # waits for the old thread instead of running beside it
    box.put(2)
    deadline = time.monotonic() + 3
    while 2 not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.stop(2)
    assert seen == [1, 2] and concurrent == []
