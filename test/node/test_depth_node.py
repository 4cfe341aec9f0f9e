"""The real depth node across processes.

The multi-process part runs real rclpy (FastDDS over loopback) on a random ROS_DOMAIN_ID with
localhost-only discovery. It starts, in parallel, once for the whole module:

* node A (``/cam_a/depth_a``): raw input, tiny random-init MoA-DepthCLIP checkpoint; its input
  QoS is reliable with a deep queue so the fuzz test can count rejections exactly;
* node B (``/cam_b/depth_b``): compressed input with ``image`` remapped (so it must subscribe
  ``<remapped image>/compressed``), 16UC1 output, default (best-effort, depth 1)
  input QoS, ``autostart:=false`` (the test drives the lifecycle services), never gets
  camera_info;
* node E / node F: node A's model exported to ONNX as fp32 / quantized to int8, on ONNX
  Runtime, on camera A's stream; node G: its int8 graph for OpenVINO, on the openvino backend;
* node C: a corrupt checkpoint, which must make the process exit non-zero naming the file;
* one publisher process per live node (test/ros_helpers/image_publisher.py).

The test process itself subscribes to the outputs and /diagnostics and calls the parameter and
lifecycle services. Each test sends frames with its own stamps, so tests do not see each
other's output.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DEPTHBLIP2, TINY_MOA, TINY_SPACE_CLIP, rss_mb
from lifecycle_msgs.msg import Transition
from ros_helpers import frames
from ros_helpers.frames import new_stamps
from ros_helpers.harness import (
    NodeProcess,
    PublisherProcess,
    RosProbe,
    localhost_discovery,
    ros_environment,
)
from sensor_msgs.msg import CameraInfo

from moa_depth_ros.msgs.image_codec import image_msg_to_array
from moa_depth_ros.node.diagnostics import Level
from moa_depth_ros.node.outputs import (
    OUTPUT_TOPICS,
)

WIDTH, HEIGHT = 640, 480
SMALL = (64, 48)
CAMERA_B_IMAGE = "/cam_b/camera/image_raw"  # node B remaps "image" to it


class Graph:
    """Everything the multi-process tests share (see the module docstring)."""

    def __init__(self, tmp: Path) -> None:
        import random

        from moa_depth_ros.models import build_model
        from moa_depth_ros.models.checkpoint import save_checkpoint

        self.tmp = tmp
        self.domain_id = random.randint(1, 200)
        env = ros_environment(tmp / "ros_log", self.domain_id)
        moa = build_model(TINY_MOA)
        checkpoint = save_checkpoint(moa, tmp / "tiny.safetensors")
        self.bad_checkpoint = tmp / "broken_model.safetensors"
        self.bad_checkpoint.write_bytes(b"this is not a safetensors file")
        common = {"checkpoint": str(checkpoint), "device": "cpu"}
        # Node B serves SPACE-CLIP: every model type goes through the same node path.
        space_clip = save_checkpoint(build_model(TINY_SPACE_CLIP), tmp / "space_clip.safetensors")
        self.a = NodeProcess(
            "depth_a",
            "/cam_a",
            {**common, "input_qos_reliability": "reliable", "input_qos_depth": 1000},
            env,
            tmp / "node_a.log",
        )
        self.b = NodeProcess(
            "depth_b",
            "/cam_b",
            {
                **common,
                "checkpoint": str(space_clip),
                "input_transport": "compressed",
                "depth_encoding": "16UC1",
                "autostart": False,
            },
            env,
            tmp / "node_b.log",
            # Remapping 'image' must move the compressed input with it, as image_transport does.
            extra_ros_args=["-r", f"image:={CAMERA_B_IMAGE}"],
        )
        self.c = NodeProcess(
            "depth_c", "/cam_c", {"checkpoint": str(self.bad_checkpoint)}, env, tmp / "node_c.log"
        )
        # Node E: node A's model exported to ONNX, on ONNX Runtime, on camera A's stream.
        from moa_depth_ros.inference.onnx_export import export_onnx

        onnx_file = tmp / "tiny_moa.onnx"
        export_onnx(moa, onnx_file, batch="dynamic")  # the weights node A loads
        self.e = NodeProcess(
            "depth_e",
            "/cam_e",
            {"backend": "onnxruntime", "onnx_file": str(onnx_file), "onnx_threads": 1},
            env,
            tmp / "node_e.log",
            extra_ros_args=["-r", "image:=/cam_a/image", "-r", "camera_info:=/cam_a/camera_info"],
        )
        # Node F: the same graph quantized to int8, as moa-depth-export --quantize int8 writes it.
        from moa_depth_ros.inference.quantize import calibration_inputs, export_int8, synthetic_rgb

        int8_file = tmp / "tiny_moa.int8.onnx"
        calibration = calibration_inputs(synthetic_rgb(3), moa.preprocessing)
        export_int8(onnx_file, int8_file, calibration, {"source": "synthetic", "frames": 3}, 0.05)
        self.f = NodeProcess(
            "depth_f",
            "/cam_f",
            {"backend": "onnxruntime", "onnx_file": str(int8_file), "onnx_threads": 1},
            env,
            tmp / "node_f.log",
            extra_ros_args=["-r", "image:=/cam_a/image", "-r", "camera_info:=/cam_a/camera_info"],
        )
        # Node G: int8 for OpenVINO (moa-depth-export --int8-for openvino), backend openvino.
        openvino_file = tmp / "tiny_moa.openvino.onnx"
        export_int8(onnx_file, openvino_file, calibration, {"source": "synthetic", "frames": 3},
                    0.05, "openvino")  # fmt: skip
        self.g = NodeProcess(
            "depth_g",
            "/cam_g",
            {"backend": "openvino", "onnx_file": str(openvino_file), "onnx_threads": 1},
            env,
            tmp / "node_g.log",
            extra_ros_args=["-r", "image:=/cam_a/image", "-r", "camera_info:=/cam_a/camera_info"],
        )
        # Node D: DepthBLIP-2 on camera A's stream (it infers only while somebody subscribes).
        blip = save_checkpoint(build_model(TINY_DEPTHBLIP2), tmp / "depthblip2.safetensors")
        self.d = NodeProcess(
            "depth_d",
            "/cam_d",
            {"checkpoint": str(blip), "device": "cpu"},
            env,
            tmp / "node_d.log",
            extra_ros_args=["-r", "image:=/cam_a/image", "-r", "camera_info:=/cam_a/camera_info"],
        )
        self.pub_a = PublisherProcess(
            env, "/cam_a/image", "/cam_a/camera_info", tmp / "pub_a.log", depth=1000
        )
        self.pub_b = PublisherProcess(
            env,
            f"{CAMERA_B_IMAGE}/compressed",
            "/cam_b/camera_info",
            tmp / "pub_b.log",
            transport="compressed",
        )
        self.probe = RosProbe(self.domain_id)

    def close(self) -> None:
        self.probe.close()
        for process in (self.pub_a, self.pub_b, self.a, self.b, self.c, self.d, self.e, self.f,
                        self.g):  # fmt: skip
            process.stop()


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    # The test process's own rclpy node must discover like its children: same domain (passed
    # to rclpy.init) and localhost only.
    with localhost_discovery():
        g = Graph(tmp_path_factory.mktemp("node"))
        try:
            yield g
        finally:
            g.close()


def wait_active(graph: Graph, node: NodeProcess, timeout: float = 90.0):
    diag = graph.probe.diagnostic(
        node.name, lambda d: d.values["lifecycle_state"] == "active", timeout=timeout
    )
    assert diag is not None, f"{node.full_name} never became active; log:\n{node.log_text()}"
    return diag


def ensure_b_active(graph: Graph) -> None:
    """Node B starts with autostart:=false: configure and activate it through its services."""
    if graph.probe.diagnostic("depth_b", lambda d: d.values["lifecycle_state"] == "active", 0.5):
        return
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        assert graph.probe.change_state(graph.b.full_name, transition), graph.b.log_text()
    wait_active(graph, graph.b, timeout=10)


def subscribe(graph: Graph, namespace: str) -> None:
    graph.probe.subscribe_outputs(namespace)
    assert graph.probe.wait_until(lambda: graph.probe.outputs_matched(namespace), 20)


def send_until(
    graph: Graph,
    publisher: PublisherProcess,
    topic: str,
    width: int,
    height: int,
    count: int = 3,
    attempts: int = 5,
    timeout: float = 10.0,
    **kwargs,
) -> tuple[list[int], object]:
    """Send ``count`` frames (repeating with new stamps while the graph is still matching up)
    until ``topic`` carries one of them; (stamps of the successful batch, that message)."""
    assert publisher.command("wait_matched")["ok"]
    for _ in range(attempts):
        stamps = new_stamps(count)
        publisher.frames(stamps, width, height, period=0.05, **kwargs)
        message = graph.probe.first_message(topic, stamps, timeout)
        if message is not None:
            return stamps, message
    raise AssertionError(f"nothing on {topic} after {attempts} batches")


def diag_after(graph: Graph, node: str, predicate=lambda d: True, timeout: float = 5.0):
    """A diagnostics status published after now (counters include everything sent so far)."""
    diag = graph.probe.diagnostic(node, predicate, timeout=timeout, after=time.monotonic())
    assert diag is not None, f"no matching diagnostics from {node}"
    return diag


def count_lines(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


MISSING_INFO_WARNING = "no camera_info within sync_slop"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bad_checkpoint_exits_nonzero_naming_the_file(graph: Graph) -> None:
    returncode = graph.c.wait(timeout=90)
    log = graph.c.log_text()
    assert returncode == 1, log
    assert str(graph.bad_checkpoint) in log and "configure failed" in log


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_no_inference_while_nobody_subscribes(graph: Graph) -> None:
    wait_active(graph, graph.a)
    graph.probe.unsubscribe_outputs("/cam_a")
    # Unmatching is asynchronous in DDS: wait until the graph shows nobody on the outputs.
    assert graph.probe.wait_until(
        lambda: all(
            graph.probe.node.count_subscribers(f"/cam_a/{topic}") == 0 for topic in OUTPUT_TOPICS
        ),
        10,
    )
    before = diag_after(graph, "depth_a")
    assert graph.pub_a.command("wait_matched")["ok"]
    # A loaded machine may drop a batch between processes: send until three images arrived.
    after = None
    for _ in range(5):
        graph.pub_a.frames(new_stamps(3), *SMALL, period=0.05)
        with contextlib.suppress(AssertionError):
            after = diag_after(
                graph,
                "depth_a",
                lambda d: d.int("messages_received") >= before.int("messages_received") + 3,
            )
            break
    assert after is not None, "depth_a never counted three more images"
    received = after.int("messages_received") - before.int("messages_received")
    assert after.int("frames_published") == before.int("frames_published")
    skipped = after.int("frames_skipped_no_subscribers")
    assert skipped == before.int("frames_skipped_no_subscribers") + received


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_depth_camera_info_and_cloud_from_640x480(graph: Graph) -> None:
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    probe = graph.probe
    stamps, _ = send_until(graph, graph.pub_a, "/cam_a/depth/points", WIDTH, HEIGHT)

    # One stamp with every output (outputs are reliable depth 1: a later frame may replace one).
    def complete() -> int | None:
        for stamp in stamps:
            if all(probe.messages(f"/cam_a/{t}", stamp) for t in OUTPUT_TOPICS):
                return stamp
        return None

    stamp = probe.wait_until(complete, 10)
    assert stamp is not None, {t: probe.stamps(f"/cam_a/{t}") for t in OUTPUT_TOPICS}
    depth_msg = probe.messages("/cam_a/depth/image", stamp)[0]
    info = probe.messages("/cam_a/depth/camera_info", stamp)[0]
    cloud = probe.messages("/cam_a/depth/points", stamp)[0]

    # depth/image: REP 118 32FC1 metres at the input resolution, header copied.
    assert depth_msg.encoding == "32FC1"
    assert (depth_msg.width, depth_msg.height) == (WIDTH, HEIGHT)
    assert depth_msg.header.frame_id == frames.FRAME_ID
    depth = image_msg_to_array(depth_msg)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.99
    assert np.all((depth[valid] >= 0.1 - 1e-6) & (depth[valid] <= 10.0 + 1e-6))

    # depth/camera_info: same header, the camera's intrinsics (same resolution).
    assert isinstance(info, CameraInfo) and info.header.frame_id == frames.FRAME_ID
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    fx, fy, cx, cy = frames.intrinsics(WIDTH, HEIGHT)
    np.testing.assert_allclose(info.p[[0, 5, 2, 6]], [fx, fy, cx, cy])

    # depth/points: organized, decimated by 2, xyz + rgb in the PCL layout.
    assert cloud.header.frame_id == frames.FRAME_ID
    assert (cloud.height, cloud.width) == (HEIGHT // 2, WIDTH // 2)
    assert [(f.name, f.offset) for f in cloud.fields] == [("x", 0), ("y", 4), ("z", 8), ("rgb", 16)]
    assert cloud.point_step == 32 and not cloud.is_dense and not cloud.is_bigendian
    points = np.frombuffer(bytes(cloud.data), dtype=np.uint8).reshape(cloud.height, cloud.width, 32)
    xyz = points[..., :12].copy().view("<f4")
    z = depth[::2, ::2]
    u = np.arange(0, WIDTH, 2, dtype=np.float64)[None, :]
    v = np.arange(0, HEIGHT, 2, dtype=np.float64)[:, None]
    np.testing.assert_allclose(xyz[..., 2], z, rtol=1e-6)
    np.testing.assert_allclose(xyz[..., 0], (u - cx) * z / fx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xyz[..., 1], (v - cy) * z / fy, rtol=1e-5, atol=1e-6)
    rgb = frames.pattern_rgb(stamp, WIDTH, HEIGHT)[::2, ::2]
    np.testing.assert_array_equal(points[..., 16:19], rgb[..., ::-1])  # b, g, r bytes

    colorized = probe.messages("/cam_a/depth/colorized", stamp)[0]
    confidence = image_msg_to_array(probe.messages("/cam_a/depth/confidence", stamp)[0])
    assert colorized.encoding == "bgr8" and (colorized.width, colorized.height) == (WIDTH, HEIGHT)
    assert confidence.shape == (HEIGHT, WIDTH)
    assert np.nanmin(confidence) >= 0.0 and np.nanmax(confidence) <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_diagnostics_report_rates_latency_and_model(graph: Graph) -> None:
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    send_until(graph, graph.pub_a, "/cam_a/depth/image", *SMALL)
    diag = diag_after(graph, "depth_a", lambda d: d.int("frames_published") > 0)
    assert diag.hardware_id == "cpu"
    assert diag.values["device"] == "cpu" and diag.values["model_type"] == "moa_depthclip"
    assert diag.float("input_rate_hz") > 0 and diag.float("output_rate_hz") > 0
    p50, p95 = diag.float("inference_latency_p50_ms"), diag.float("inference_latency_p95_ms")
    assert 0 < p50 <= p95
    for key in ("frames_dropped", "messages_rejected", "camera_info_missing", "inference_errors"):
        assert diag.int(key) >= 0
    assert "last_reject_reason" in diag.values


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_parameters_change_at_runtime_or_are_rejected(graph: Graph) -> None:
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    probe, node = graph.probe, graph.a.full_name
    try:
        results = probe.set_parameters(
            node,
            {
                "depth_encoding": "16UC1",
                "points_decimation": 4,
                "points_rgb": False,
                "publish_colorized": False,
            },
        )
        assert all(r.successful for r in results), results
        # Set one at a time: min first would be rejected against the old max (10 m).
        assert probe.set_parameters(node, {"min_depth": 2.0})[0].successful
        assert probe.set_parameters(node, {"max_depth": 3.0})[0].successful

        stamps, cloud = send_until(graph, graph.pub_a, "/cam_a/depth/points", *SMALL)
        depth_msg = probe.first_message("/cam_a/depth/image", stamps, 5)
        assert depth_msg.encoding == "16UC1"
        mm = np.frombuffer(bytes(depth_msg.data), "<u2")
        assert np.all((mm == 0) | ((mm >= 2000) & (mm <= 3000))), (mm.min(), mm.max())
        assert (cloud.height, cloud.width) == (SMALL[1] // 4, SMALL[0] // 4)
        assert cloud.point_step == 16 and [f.name for f in cloud.fields] == ["x", "y", "z"]
        assert probe.first_message("/cam_a/depth/confidence", stamps, 5) is not None
        assert not any(probe.messages("/cam_a/depth/colorized", s) for s in stamps)

        rejected = {
            "min_depth": (5.0, "need 0 < min_depth < max_depth"),
            "checkpoint": ("/elsewhere.safetensors", "read-only"),
            "device": ("cuda", "read-only"),
            "points_decimation": (0, "out of range"),
            "depth_encoding": ("8UC1", "must be one of"),
            "max_depth": ("far", "Wrong parameter type"),
        }
        for name, (value, reason) in rejected.items():
            [result] = probe.set_parameters(node, {name: value})
            assert not result.successful, name
            assert reason in result.reason, (name, result.reason)
    finally:
        restore = probe.set_parameters(
            node,
            {"max_depth": 10.0, "min_depth": 0.1, "depth_encoding": "32FC1"}
            | {"points_decimation": 2, "points_rgb": True, "publish_colorized": True},
        )
        assert all(r.successful for r in restore), restore


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_missing_camera_info_publishes_depth_without_cloud(graph: Graph) -> None:
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    probe = graph.probe
    send_until(graph, graph.pub_a, "/cam_a/depth/points", *SMALL)  # clouds while info flows
    before = diag_after(graph, "depth_a")
    warnings_before = count_lines(graph.a.log_text(), MISSING_INFO_WARNING)

    # Far from every camera_info stamp sent so far (sync_slop is 0.05 s).
    stamps, depth_msg = send_until(
        graph, graph.pub_a, "/cam_a/depth/image", *SMALL, count=4, camera_info=False
    )
    assert depth_msg.header.frame_id == frames.FRAME_ID
    assert probe.wait_until(
        lambda: sum(bool(probe.messages("/cam_a/depth/image", s)) for s in stamps) >= 2, 5
    )
    time.sleep(0.5)  # a cloud would have come right after its depth image
    for topic in ("/cam_a/depth/points", "/cam_a/depth/camera_info"):
        assert not any(probe.messages(topic, s) for s in stamps), topic
    diag = diag_after(graph, "depth_a")
    processed = sum(bool(probe.messages("/cam_a/depth/image", s)) for s in stamps)
    assert diag.int("camera_info_missing") - before.int("camera_info_missing") >= processed
    assert diag.level == Level.WARN and "camera_info" in diag.message
    # One warning for the whole run of frames without camera_info, not one per frame.
    assert count_lines(graph.a.log_text(), MISSING_INFO_WARNING) == warnings_before + 1

    send_until(graph, graph.pub_a, "/cam_a/depth/points", *SMALL)  # clouds come back


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_fuzzed_images_are_all_rejected_and_counted(graph: Graph) -> None:
    """≥ 500 malformed images, then a valid one. Node A's input QoS is reliable with depth 1000
    and the publisher waits until every message is acknowledged, so none is lost in transport:
    the node must receive exactly 501 messages and reject exactly the 500 malformed ones."""
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    send_until(graph, graph.pub_a, "/cam_a/depth/image", *SMALL, count=1)  # matched and idle
    time.sleep(0.3)
    before = diag_after(graph, "depth_a")
    count = 560
    reply = graph.pub_a.command("fuzz", count=count, seed=7)
    assert reply["ok"] and reply["sent"] == count, reply
    [stamp] = new_stamps(1)
    graph.pub_a.frames([stamp], *SMALL)
    assert graph.probe.first_message("/cam_a/depth/image", [stamp], 30) is not None
    received_before = before.int("messages_received")
    diag = diag_after(
        graph, "depth_a", lambda d: d.int("messages_received") >= received_before + count + 1
    )
    assert diag.int("messages_received") - received_before == count + 1
    assert diag.int("messages_rejected") - before.int("messages_rejected") == count
    assert diag.values["last_reject_reason"].startswith("image: ")
    assert diag.level == Level.WARN and "rejecting input" in diag.message
    assert graph.a.process.poll() is None
    # Rejections are logged rate-limited, not once per message.
    assert count_lines(graph.a.log_text(), "rejected a message on 'image'") < 20


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_lifecycle_services_bring_up_a_node_without_autostart(graph: Graph) -> None:
    if graph.probe.diagnostic("depth_b", lambda d: d.values["lifecycle_state"] == "active", 0.5):
        pytest.skip("node B was already activated by an earlier test")
    diag = graph.probe.diagnostic("depth_b", timeout=90)
    assert diag is not None, graph.b.log_text()
    assert diag.values["lifecycle_state"] == "unconfigured" and diag.level == Level.ERROR
    ensure_b_active(graph)
    diag = diag_after(graph, "depth_b")
    assert diag.values["lifecycle_state"] == "active" and diag.values["device"] == "cpu"
    assert diag.values["model_type"] == "space_clip"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_compressed_input_with_16uc1_output_and_no_camera_info(graph: Graph) -> None:
    ensure_b_active(graph)
    subscribe(graph, "/cam_b")
    probe = graph.probe
    width, height = 320, 240
    stamps, depth_msg = send_until(
        graph, graph.pub_b, "/cam_b/depth/image", width, height, camera_info=False
    )
    assert depth_msg.encoding == "16UC1" and (depth_msg.width, depth_msg.height) == (width, height)
    assert depth_msg.header.frame_id == frames.FRAME_ID
    mm = np.frombuffer(bytes(depth_msg.data), "<u2")
    assert np.all((mm == 0) | ((mm >= 100) & (mm <= 10000)))
    assert probe.first_message("/cam_b/depth/colorized", stamps, 5) is not None
    # SPACE-CLIP regresses depth without bins: there is no confidence map to publish.
    assert not probe.stamps("/cam_b/depth/confidence")
    time.sleep(0.5)
    assert not probe.stamps("/cam_b/depth/points") and not probe.stamps("/cam_b/depth/camera_info")
    diag = diag_after(graph, "depth_b")
    assert diag.int("camera_info_missing") >= 1 and diag.level == Level.WARN
    send_until(graph, graph.pub_b, "/cam_b/depth/image", width, height, camera_info=False)
    assert count_lines(graph.b.log_text(), MISSING_INFO_WARNING) == 1
    assert f"subscribed to '{CAMERA_B_IMAGE}/compressed'" in graph.b.log_text()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_garbage_jpeg_is_rejected_and_the_node_keeps_serving(graph: Graph) -> None:
    """Node B keeps the default best-effort, depth-1 input QoS, so a burst may be thinned out
    in transport: the test counts what the node reports it received, not what was sent."""
    ensure_b_active(graph)
    subscribe(graph, "/cam_b")
    send_until(graph, graph.pub_b, "/cam_b/depth/image", 160, 120, count=1, camera_info=False)
    time.sleep(0.3)
    before = diag_after(graph, "depth_b")
    reply = graph.pub_b.command("fuzz", count=100, seed=3)
    assert reply["ok"] and reply["sent"] == 100
    time.sleep(0.3)  # let a depth-1 reader take the last garbage message before the valid one
    send_until(graph, graph.pub_b, "/cam_b/depth/image", 160, 120, count=1, camera_info=False)
    diag = diag_after(graph, "depth_b")
    received = diag.int("messages_received") - before.int("messages_received")
    rejected = diag.int("messages_rejected") - before.int("messages_rejected")
    assert 1 <= rejected <= 100 and received >= rejected + 1
    reason = diag.values["last_reject_reason"]
    assert reason.startswith(f"{CAMERA_B_IMAGE}/compressed: ")
    assert any(word in reason for word in ("JPEG", "PNG", "could not decode")), reason
    assert graph.b.process.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_depthblip2_checkpoint_serves_depth_confidence_and_clouds(graph: Graph) -> None:
    wait_active(graph, graph.d)
    subscribe(graph, "/cam_d")
    probe = graph.probe
    stamps, depth_msg = send_until(graph, graph.pub_a, "/cam_d/depth/image", *SMALL)
    depth = image_msg_to_array(depth_msg)
    assert depth.shape == (SMALL[1], SMALL[0]) and depth_msg.header.frame_id == frames.FRAME_ID
    assert np.nanmin(depth) >= 1.0 and np.nanmax(depth) <= 3.5  # inside DepthBLIP-2's bins
    stamp = next(s for s in stamps if probe.messages("/cam_d/depth/image", s))
    assert probe.first_message("/cam_d/depth/confidence", [stamp], 5) is not None
    assert probe.first_message("/cam_d/depth/points", [stamp], 5) is not None
    diag = diag_after(graph, "depth_d")
    assert diag.values["model_type"] == "depthblip2"


def depth_beside_node_a(graph: Graph, node: NodeProcess) -> tuple[np.ndarray, np.ndarray]:
    """``node`` (on camera A's stream) and node A's depth for one frame, after checking
    ``node`` also published that frame's cloud: (``node``'s depth, node A's depth)."""
    namespace = node.full_name.rsplit("/", 1)[0]
    wait_active(graph, node)
    wait_active(graph, graph.a)
    subscribe(graph, namespace)
    subscribe(graph, "/cam_a")
    probe = graph.probe
    topic = f"{namespace}/depth/image"
    stamps, msg = send_until(graph, graph.pub_a, topic, *SMALL)
    stamp = next(s for s in stamps if probe.messages(topic, s))
    reference = probe.first_message("/cam_a/depth/image", [stamp], 10)
    assert reference is not None
    ours, theirs = image_msg_to_array(msg), image_msg_to_array(reference)
    assert ours.shape == theirs.shape == (SMALL[1], SMALL[0])
    assert probe.first_message(f"{namespace}/depth/points", [stamp], 5) is not None
    return ours, theirs


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_onnx_runtime_node_publishes_what_the_torch_node_publishes(graph: Graph) -> None:
    """Node E runs node A's model exported to ONNX: the same frame, the same depth (±1e-4 m)."""
    onnx_depth, torch_depth = depth_beside_node_a(graph, graph.e)
    assert np.nanmax(np.abs(onnx_depth - torch_depth)) <= 1e-4
    diag = diag_after(graph, "depth_e")
    assert diag.values["backend"] == "onnxruntime (CPUExecutionProvider)"
    assert diag.values["model_type"] == "moa_depthclip"
    assert diag.values["precision"] == "fp32"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_int8_node_publishes_depth_close_to_fp32_and_says_int8(graph: Graph) -> None:
    """Node F runs node A's model quantized to int8: the same frame within 5 % AbsRel, a cloud,
    and /diagnostics naming the precision that really runs."""
    int8_depth, fp32_depth = depth_beside_node_a(graph, graph.f)
    abs_rel = np.nanmean(np.abs(int8_depth - fp32_depth) / fp32_depth)
    assert 0 < abs_rel <= 0.05  # 0: it would be running fp32
    diag = diag_after(graph, "depth_f")
    assert diag.values["precision"] == "int8"
    assert diag.values["backend"] == "onnxruntime (CPUExecutionProvider)"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_openvino_int8_node_publishes_depth_close_to_fp32(graph: Graph) -> None:
    """Node G runs the int8 graph made for OpenVINO on the openvino backend."""
    int8_depth, fp32_depth = depth_beside_node_a(graph, graph.g)
    abs_rel = np.nanmean(np.abs(int8_depth - fp32_depth) / fp32_depth)
    assert 0 < abs_rel <= 0.05
    diag = diag_after(graph, "depth_g")
    assert diag.values["precision"] == "int8" and diag.values["backend"] == "openvino (CPU)"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_camera_info_of_another_shape_is_rejected_and_depth_still_published(graph: Graph) -> None:
    wait_active(graph, graph.a)
    subscribe(graph, "/cam_a")
    probe = graph.probe
    stamps, _ = send_until(
        graph, graph.pub_a, "/cam_a/depth/image", 160, 120, info_size=[100, 1000]
    )
    time.sleep(0.5)
    assert not any(probe.messages("/cam_a/depth/points", s) for s in stamps)
    diag = diag_after(graph, "depth_a")
    assert diag.int("camera_info_rejected") >= 1 and diag.level == Level.WARN
    assert "another aspect ratio" in diag.values["last_camera_info_reject"]
    assert "camera_info rejected" in diag.message
    send_until(graph, graph.pub_a, "/cam_a/depth/points", 160, 120)  # a fitting one: clouds again


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_images_lost_in_transport_are_visible_on_diagnostics(graph: Graph) -> None:
    """camera_info at 20 Hz, only every 10th image: what default FastDDS does to raw VGA."""
    wait_active(graph, graph.a)
    time.sleep(5.5)  # let the 5 s rate windows forget earlier tests' images
    assert graph.pub_a.command("wait_matched")["ok"]
    graph.pub_a.frames(new_stamps(80, 0.05), *SMALL, period=0.05, image_every=10)
    diag = diag_after(graph, "depth_a", lambda d: "images arrive" in d.message, timeout=5)
    assert diag.level == Level.WARN
    assert float(diag.values["camera_info_rate_hz"]) > 5 * float(diag.values["input_rate_hz"]) > 0
    assert "fastdds_large_shm.xml" in diag.message and "publisher too" in diag.message


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_png_bomb_is_rejected_unread_and_the_next_frame_gets_output(graph: Graph) -> None:
    ensure_b_active(graph)
    subscribe(graph, "/cam_b")
    send_until(graph, graph.pub_b, "/cam_b/depth/image", 160, 120, count=1, camera_info=False)
    before = rss_mb(graph.b.process.pid)
    reply = graph.pub_b.command("png_bomb", side=9000)
    assert reply["ok"] and reply["bytes"] < 200_000  # 81 MB of pixels in a few KB
    diag = diag_after(graph, "depth_b", lambda d: "9000x9000" in d.values["last_reject_reason"])
    assert (
        "exceed the maximum 8192x8192 (rejected before decoding)"
        in diag.values["last_reject_reason"]
    )
    send_until(graph, graph.pub_b, "/cam_b/depth/image", 160, 120, count=1, camera_info=False)
    assert rss_mb(graph.b.process.pid) < before + 300


# Last: it stops node A.
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigint_shuts_the_node_down_cleanly(graph: Graph) -> None:
    wait_active(graph, graph.a)
    assert graph.a.stop() == 0, graph.a.log_text()
