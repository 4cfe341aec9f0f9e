"""One depth node serving several cameras, across processes.

Started once for the module, on a private ROS graph (random domain, localhost only):

* node M3 (``/robot/multi3``): cameras ``left``, ``right``, ``rear`` at three resolutions (so
  three pinhole models), tiny MoA-DepthCLIP on torch, raw input with a reliable deep input
  queue so that counts are exact;
* node M2 (``/robot/multi2``): cameras ``front`` and ``back`` on ONNX Runtime, compressed
  input, ``front/image`` remapped to a driver's topic (the compressed input follows it);
* one publisher process per camera, each with its own frame_id.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MOA
from ros_helpers import frames
from ros_helpers.frames import new_stamps
from ros_helpers.harness import (
    NodeProcess,
    PublisherProcess,
    RosProbe,
    localhost_discovery,
    ros_environment,
)

from moa_depth_ros.msgs.image_codec import image_msg_to_array

NAMESPACE = "/robot"
#: camera → (width, height) of its images; M3's first three, M2's last two.
SIZES = {
    "left": (160, 120),
    "right": (128, 96),
    "rear": (96, 72),
    "front": (128, 96),
    "back": (96, 72),
}
FRONT_DRIVER_TOPIC = "/zed/front/image_raw"


def frame_id(camera: str) -> str:
    return f"{camera}_optical_frame"


class Rig:
    def __init__(self, tmp: Path) -> None:
        from moa_depth_ros.inference.onnx_export import export_onnx
        from moa_depth_ros.models import build_model
        from moa_depth_ros.models.checkpoint import save_checkpoint

        domain = random.randint(1, 200)
        env = ros_environment(tmp / "ros_log", domain)
        model = build_model(TINY_MOA)
        checkpoint = save_checkpoint(model, tmp / "tiny.safetensors")
        onnx_file = tmp / "tiny.onnx"
        export_onnx(model, onnx_file, batch="dynamic")
        self.m3 = NodeProcess(
            "multi3",
            NAMESPACE,
            {
                "checkpoint": str(checkpoint),
                "device": "cpu",
                "cameras": ["left", "right", "rear"],
                "input_qos_reliability": "reliable",
                "input_qos_depth": 1000,
            },
            env,
            tmp / "multi3.log",
        )
        self.m2 = NodeProcess(
            "multi2",
            NAMESPACE,
            {
                "backend": "onnxruntime",
                "onnx_file": str(onnx_file),
                "onnx_threads": 1,
                "cameras": ["front", "back"],
                "input_transport": "compressed",
            },
            env,
            tmp / "multi2.log",
            extra_ros_args=["-r", f"front/image:={FRONT_DRIVER_TOPIC}"],
        )
        self.publishers: dict[str, PublisherProcess] = {}
        for camera in ("left", "right", "rear"):
            self.publishers[camera] = PublisherProcess(
                env,
                f"{NAMESPACE}/{camera}/image",
                f"{NAMESPACE}/{camera}/camera_info",
                tmp / f"pub_{camera}.log",
                depth=1000,
                frame_id=frame_id(camera),
            )
        for camera, image_topic in (
            ("front", f"{FRONT_DRIVER_TOPIC}/compressed"),
            ("back", f"{NAMESPACE}/back/image/compressed"),
        ):
            self.publishers[camera] = PublisherProcess(
                env,
                image_topic,
                f"{NAMESPACE}/{camera}/camera_info",
                tmp / f"pub_{camera}.log",
                transport="compressed",
                frame_id=frame_id(camera),
            )
        self.probe = RosProbe(domain)

    def close(self) -> None:
        self.probe.close()
        for process in (*self.publishers.values(), self.m3, self.m2):
            process.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    with localhost_discovery():
        r = Rig(tmp_path_factory.mktemp("multi_camera"))
        try:
            yield r
        finally:
            r.close()


def ready(rig: Rig, node: NodeProcess, cameras: tuple[str, ...]) -> None:
    """``node`` active, the probe subscribed to the cameras' outputs, publishers matched."""
    active = rig.probe.diagnostic(
        node.name, lambda d: d.values["lifecycle_state"] == "active", timeout=120
    )
    assert active is not None, f"{node.full_name} never became active:\n{node.log_text()}"
    for camera in cameras:
        rig.probe.subscribe_outputs(f"{NAMESPACE}/{camera}")
    assert rig.probe.wait_until(
        lambda: all(rig.probe.outputs_matched(f"{NAMESPACE}/{c}") for c in cameras), 30
    )
    for camera in cameras:
        assert rig.publishers[camera].command("wait_matched")["ok"], camera


def send_together(rig: Rig, plan: dict[str, tuple[int, float]]) -> dict[str, list[int]]:
    """Each camera of ``plan`` sends ``count`` frames every ``period`` s, all at once;
    the stamps each camera sent."""
    stamps = {camera: new_stamps(count, period) for camera, (count, period) in plan.items()}
    threads = [
        threading.Thread(
            target=rig.publishers[camera].frames,
            args=(stamps[camera], *SIZES[camera]),
            kwargs={"period": plan[camera][1]},
        )
        for camera in plan
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stamps


def received(rig: Rig, camera: str, topic: str, stamps: list[int]) -> list[int]:
    seen = rig.probe.stamps(f"{NAMESPACE}/{camera}/{topic}")
    return [s for s in stamps if s in seen]


def wait_for_outputs(rig: Rig, camera: str, topic: str, stamps: list[int], count: int) -> list:
    rig.probe.wait_until(lambda: len(received(rig, camera, topic, stamps)) >= count, 20)
    return received(rig, camera, topic, stamps)


def settled_diagnostics(rig: Rig, label: str, key: str = "frames_published"):
    """A status of ``label`` whose counter ``key`` no longer changes (traffic is over)."""
    previous = None
    for _ in range(20):
        diag = rig.probe.diagnostic(label, timeout=5, after=time.monotonic())
        assert diag is not None, f"no diagnostics from {label}"
        if previous is not None and diag.values[key] == previous.values[key]:
            return diag
        previous = diag
    raise AssertionError(f"{label}: {key} never settled")


def assert_pinhole_cloud(rig: Rig, camera: str, stamp: int) -> None:
    """depth/image, depth/camera_info and depth/points of ``stamp``: the camera's own size,
    frame_id, stamp and intrinsics; the cloud is the depth back-projected through them."""
    width, height = SIZES[camera]
    base = f"{NAMESPACE}/{camera}"
    [depth_msg] = rig.probe.messages(f"{base}/depth/image", stamp)[:1]
    [info] = rig.probe.messages(f"{base}/depth/camera_info", stamp)[:1]
    [cloud] = rig.probe.messages(f"{base}/depth/points", stamp)[:1]
    for msg in (depth_msg, info, cloud):
        assert msg.header.frame_id == frame_id(camera)
    assert (depth_msg.width, depth_msg.height) == (width, height)
    fx, fy, cx, cy = frames.intrinsics(width, height)
    np.testing.assert_allclose(info.p[[0, 5, 2, 6]], [fx, fy, cx, cy])
    depth = image_msg_to_array(depth_msg)
    assert (cloud.height, cloud.width) == (height // 2, width // 2)  # points_decimation 2
    points = np.frombuffer(bytes(cloud.data), np.uint8).reshape(cloud.height, cloud.width, -1)
    xyz = points[..., :12].copy().view("<f4")
    z = depth[::2, ::2]
    u = np.arange(0, width, 2, dtype=np.float64)[None, :]
    v = np.arange(0, height, 2, dtype=np.float64)[:, None]
    np.testing.assert_allclose(xyz[..., 2], z, rtol=1e-6)
    np.testing.assert_allclose(xyz[..., 0], (u - cx) * z / fx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xyz[..., 1], (v - cy) * z / fy, rtol=1e-5, atol=1e-6)


M3_CAMERAS = ("left", "right", "rear")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_cameras_at_different_rates_each_get_their_own_depth_and_clouds(rig: Rig) -> None:
    ready(rig, rig.m3, M3_CAMERAS)
    # 20 Hz, 10 Hz and 4 Hz for about a second, all at once.
    stamps = send_together(rig, {"left": (20, 0.05), "right": (10, 0.1), "rear": (4, 0.25)})
    rear = wait_for_outputs(rig, "rear", "depth/points", stamps["rear"], 4)
    # Fairness: the slow camera loses nothing to the fast ones (its slot is only replaced by
    # its own next frame, 250 ms later); the fast ones are served too.
    assert rear == stamps["rear"]
    right = wait_for_outputs(rig, "right", "depth/points", stamps["right"], 5)
    left = wait_for_outputs(rig, "left", "depth/points", stamps["left"], 10)
    assert len(right) >= 5 and len(left) >= 10, (len(right), len(left))
    for camera, got in (("left", left), ("right", right), ("rear", rear)):
        assert_pinhole_cloud(rig, camera, got[-1])
        # Nothing of another camera on this camera's topics.
        others = {s for c, sent in stamps.items() if c != camera for s in sent}
        assert not others & rig.probe.stamps(f"{NAMESPACE}/{camera}/depth/image")

    # Several cameras went through the model together, and every frame of a batch came out.
    node = settled_diagnostics(rig, "multi3")
    assert node.values["cameras"] == "left, right, rear"
    sizes = {
        int(size): int(count)
        for size, count in (item.split(": ") for item in node.values["batch_sizes"].split(", "))
    }
    assert max(sizes) >= 2, sizes
    assert set(sizes) <= {1, 2, 3}
    published = sum(
        settled_diagnostics(rig, f"multi3/{camera}").int("frames_published")
        for camera in M3_CAMERAS
    )
    assert sum(size * count for size, count in sizes.items()) == published


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_camera_that_stops_does_not_stall_the_others(rig: Rig) -> None:
    ready(rig, rig.m3, M3_CAMERAS)
    before = settled_diagnostics(rig, "multi3/right")
    # 'right' and 'rear' are silent now; 'left' alone keeps streaming at 20 Hz.
    stamps = send_together(rig, {"left": (20, 0.05)})["left"]
    left = wait_for_outputs(rig, "left", "depth/image", stamps, 15)
    assert len(left) >= 15, f"{len(left)} of 20 frames"
    after = settled_diagnostics(rig, "multi3/right")
    assert after.int("frames_published") == before.int("frames_published")
    assert after.int("messages_received") == before.int("messages_received")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_bad_frame_is_counted_for_its_camera_only(rig: Rig) -> None:
    ready(rig, rig.m3, M3_CAMERAS)
    labels = ["multi3", *(f"multi3/{c}" for c in M3_CAMERAS)]
    before = {label: settled_diagnostics(rig, label, "messages_rejected") for label in labels}
    reply = rig.publishers["right"].command("fuzz", count=6, seed=3)
    assert reply["ok"] and reply["sent"] == 6
    right = rig.probe.diagnostic(
        "multi3/right",
        lambda d: d.int("messages_rejected") >= before["multi3/right"].int("messages_rejected") + 6,
        timeout=15,
    )
    assert right is not None
    assert right.int("messages_rejected") == before["multi3/right"].int("messages_rejected") + 6
    assert right.values["last_reject_reason"].startswith("right/image: ")
    for label in ("multi3", "multi3/left", "multi3/rear"):
        now = settled_diagnostics(rig, label, "messages_rejected")
        assert now.int("messages_rejected") == before[label].int("messages_rejected"), label
    # Still serving, the bad camera included.
    stamps = send_together(rig, {"right": (3, 0.1)})["right"]
    assert wait_for_outputs(rig, "right", "depth/image", stamps, 1)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_per_camera_points_parameter(rig: Rig) -> None:
    ready(rig, rig.m3, M3_CAMERAS)
    [result] = rig.probe.set_parameters(rig.m3.full_name, {"left.publish_points": False})
    assert result.successful, result.reason
    try:
        stamps = send_together(rig, {"left": (4, 0.1), "right": (4, 0.1)})
        assert wait_for_outputs(rig, "right", "depth/points", stamps["right"], 1)
        left = wait_for_outputs(rig, "left", "depth/image", stamps["left"], 1)
        assert left
        assert not received(rig, "left", "depth/points", stamps["left"])
    finally:
        [result] = rig.probe.set_parameters(rig.m3.full_name, {"left.publish_points": True})
        assert result.successful


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_compressed_cameras_on_onnx_runtime(rig: Rig) -> None:
    ready(rig, rig.m2, ("front", "back"))
    node = rig.probe.diagnostic("multi2", timeout=10)
    assert node is not None and node.values["backend"].startswith("onnxruntime")
    stamps = {}
    for _ in range(4):  # repeat while best-effort discovery is still settling
        stamps = send_together(rig, {"front": (5, 0.1), "back": (5, 0.1)})
        if received(rig, "front", "depth/points", stamps["front"]) and received(
            rig, "back", "depth/points", stamps["back"]
        ):
            break
        time.sleep(1.0)
    for camera in ("front", "back"):
        got = wait_for_outputs(rig, camera, "depth/points", stamps[camera], 1)
        assert got, f"{camera}: nothing published; log:\n{rig.m2.log_text()[-3000:]}"
        assert_pinhole_cloud(rig, camera, got[-1])
