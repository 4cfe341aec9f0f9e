"""The inference worker thread: survives failing batches, never runs twice, lets frames go."""

from __future__ import annotations

import threading
import time

from moa_depth_ros.node.slots import FrameSlots
from moa_depth_ros.node.worker import InferenceWorker

CAM = "camera"


def test_worker_survives_a_failing_frame_and_stops() -> None:
    box: FrameSlots[int] = FrameSlots([CAM])
    done, errors = [], []
    processed = threading.Event()

    def process(batch: dict[str, int]) -> None:
        item = batch[CAM]
        if item == 0:
            raise RuntimeError("bad frame")
        done.append(item)
        processed.set()

    worker = InferenceWorker(box, process, errors.append)
    worker.start()
    box.put(CAM, 0)
    time.sleep(0.1)
    box.put(CAM, 7)
    assert processed.wait(2)
    assert worker.stop(2) and not worker.running
    assert done == [7] and [str(e) for e in errors] == ["bad frame"]


def test_worker_restarted_while_busy_never_runs_two_threads() -> None:
    box: FrameSlots[int] = FrameSlots([CAM])
    busy, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    concurrent, seen = [], []

    def process(batch: dict[str, int]) -> None:
        item = batch[CAM]
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
    box.put(CAM, 1)
    assert busy.wait(2)
    assert not worker.stop(timeout=0.05)  # still inside the slow frame
    threading.Timer(0.2, release.set).start()
    worker.start()  # waits for the old thread instead of running beside it
    box.put(CAM, 2)
    deadline = time.monotonic() + 3
    while 2 not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.stop(2)
    assert seen == [1, 2] and concurrent == []


def test_worker_lets_go_of_a_frame_once_it_is_processed() -> None:
    """A processed frame must not stay referenced until the next one arrives: a huge frame
    (and the message its pixels are a view of) would stay resident all that time."""
    import gc
    import weakref

    class Frame:
        pass

    box: FrameSlots[Frame] = FrameSlots([CAM])
    processed = threading.Event()
    worker = InferenceWorker(box, lambda item: processed.set(), lambda exc: None)
    worker.start()
    try:
        frame = Frame()
        alive = weakref.ref(frame)
        box.put(CAM, frame)
        del frame
        assert processed.wait(5)
        time.sleep(0.05)  # well within the worker's 0.5 s idle poll
        gc.collect()
        assert alive() is None, "the worker still holds the processed frame"
    finally:
        worker.stop()


def test_a_huge_frame_through_estimator_and_cloud_leaves_no_lasting_memory() -> None:
    """8000x6000 (the raw-image limit allows it): resident memory comes back to within 300 MB
    of before once the frame and its outputs are dropped."""
    import numpy as np
    from conftest import rss_mb

    from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
    from moa_depth_ros.inference.estimator import DepthEstimator
    from moa_depth_ros.inference.torch_backend import TorchBackend
    from moa_depth_ros.models import build_model
    from moa_depth_ros.msgs.pointcloud import pack_cloud

    config = {"type": "depthclip", "clip_model": "RN-T-test", "clip_pretrained": "none",
              "image_size": [64, 64]}  # fmt: skip
    estimator = DepthEstimator(TorchBackend(build_model(config), "cpu"))
    before = rss_mb()
    frame = np.full((6000, 8000, 3), 90, np.uint8)
    depth = estimator.predict(frame).depth
    points = depth_to_points(depth, CameraIntrinsics(4000, 4000, 4000, 3000, 8000, 6000), 2)
    buffer, _, _ = pack_cloud(points, frame[::2, ::2])
    peak = rss_mb()
    del frame, depth, points, buffer
    assert peak > before + 500  # the frame really was huge
    assert rss_mb() < before + 300
