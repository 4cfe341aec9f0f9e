"""End-to-end latency of the depth node: publisher → node (CPU) → subscriber, 640×480.

A full-size MoA-DepthCLIP (ViT-B/32, random init: no weights can be downloaded here) is saved
to a temporary checkpoint and served by the real node in its own process (``device:=cpu``).
This process publishes images (+ camera_info) stamped with the current time at 10 and 30 Hz
and subscribes to ``depth/image`` and ``depth/points``; end-to-end latency is receipt time of
``depth/image`` minus its (copied) input stamp.

The estimator's own latency comes from the node's /diagnostics in the same run
(``inference_latency_p50_ms``: ``DepthResult.timings["total"]`` over the node's last 512
frames). The node restarts its latency windows on activation, so after warm-up the bench
deactivates and re-activates it and starts recording: both figures then cover the same frames.

``node_overhead_ms`` = e2e p50 − estimator p50, as the issue defines it; it includes
``queue_wait_p50_ms`` (decode plus time the newest frame waits for the worker to finish the
previous one, which grows to about half an inference when the input outpaces the model) and
transport of ~1 MB images both ways (``transport_p50_ms``: e2e minus the node's own
arrival-to-depth-published time). All are reported so the parts can be told apart.

"Flat" latency under overload: with one frame slot per camera, extra input must become drops, not a
queue. ``latency_growth_ms`` compares e2e p50 of the second half of a run with the first half.

Input QoS: ``BENCH_NODE_INPUT_QOS`` (default ``best_effort``, the node's default). Over stock
FastDDS a best-effort subscription loses most 640×480 raw images (921 KB, more than one 512 KB
shared-memory segment), so measure the ``default`` transport with ``reliable``;
``frames_received_by_node`` against ``frames_sent`` shows any loss. Reliable input at 30 Hz
cost about 11 ms more transport here (acknowledgements and history for 0.9 MB samples).

Transport: ``BENCH_NODE_TRANSPORT`` = ``large_shm`` (default: all processes load the shipped
``config/fastdds_large_shm.xml``, 16 MB shared-memory segments, which the README tells users
to load for raw VGA images; on this project's machines it took a 921 KB image from 14 ms to
3 ms one-way and made best-effort delivery lossless) or ``default`` (stock FastDDS: its 512 KB
segments are smaller than one VGA image).

Frame selection: ``BENCH_NODE_WAIT_FOR_FRESH`` = 1 (default, the node's default) or 0 sets the
node's ``wait_for_fresh_frame``; ``e2e_mean_ms`` and ``output_rate_hz`` show what it trades.

Duration per rate: ``BENCH_NODE_SECONDS`` (default 120 s), after a few seconds of warm-up.

Backends: ``BENCH_NODE_BACKENDS`` (default ``torch,onnxruntime``): the same checkpoint served by
a node per backend, one after the other (the onnxruntime node exports it at configure;
``onnxruntime_int8`` serves the file ``moa-depth-export --quantize int8`` writes from it,
``openvino_int8`` the ``--int8-for openvino`` file on the openvino backend).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import (
    emit,
    fastdds_transport,
    machine_info,
    percentile_ms,
    pinhole_camera_info,
    save_random_moa_checkpoint,
    spin_in_threads,
    stop_processes,
)
from moa_depth_ros.cli.export import main as export_main
from moa_depth_ros.msgs.stamps import stamp_to_ns
from tools.ros_graph import private_graph_environment

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
RATES_HZ = "10,30"  # override with BENCH_NODE_RATES, e.g. "2" for input below capacity
WARMUP_S = 5.0
TARGET_OVERHEAD_MS = 15.0
NODE_NAME = "bench_depth"
STARTUP_TIMEOUT_S = 180.0


def _node_environment(log_dir: Path, domain_id: int) -> dict[str, str]:
    return private_graph_environment(log_dir, domain_id, pythonpath=[REPO])


class _Driver:
    """This process's rclpy node: timed publisher, output subscriber, diagnostics reader."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from moa_depth_ros.msgs.image_codec import rgb_to_image_msg

        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        # Publisher and subscriber in separate nodes and executor threads, so receiving 1-2 MB
        # outputs never delays the next publication and vice versa.
        self.node = rclpy.create_node("bench_publisher", context=self.context)
        self.sub_node = rclpy.create_node("bench_subscriber", context=self.context)
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        # Like a camera driver on rclcpp's default QoS (reliable, depth 10): a sample lost in
        # transport is resent instead of being replaced by the next one before any repair.
        driver_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", driver_qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", driver_qos)
        rng = np.random.default_rng(0)
        self.images = [
            rgb_to_image_msg(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), Header())
            for _ in range(4)
        ]
        self.info = pinhole_camera_info(WIDTH, HEIGHT)
        self.lock = threading.Lock()
        self.latencies: list[tuple[float, float]] = []  # (receipt monotonic, e2e seconds)
        self.recording = False
        self.sent = 0
        self.latest_diag: dict[str, str] = {}
        self.sub_node.create_subscription(Image, "depth/image", self._on_depth, reliable)
        self.sub_node.create_subscription(PointCloud2, "depth/points", lambda _: None, reliable)
        self.sub_node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.timer = None
        self.executors = spin_in_threads(self.context, (self.node, self.sub_node))

    def _now_ns(self) -> int:
        return self.sub_node.get_clock().now().nanoseconds

    def _publish(self) -> None:
        msg = self.images[self.sent % len(self.images)]
        stamp = self.node.get_clock().now().to_msg()
        msg.header.stamp = stamp
        msg.header.frame_id = "camera_color_optical_frame"
        self.info.header = msg.header
        self.info_pub.publish(self.info)
        self.image_pub.publish(msg)
        self.sent += 1

    def _on_depth(self, msg) -> None:
        now_ns = self._now_ns()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        with self.lock:
            if self.recording:
                self.latencies.append((time.monotonic(), (now_ns - stamp_ns) * 1e-9))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NODE_NAME}:"):
                with self.lock:
                    self.latest_diag = {kv.key: kv.value for kv in status.values}

    def diag(self) -> dict[str, str]:
        with self.lock:
            return dict(self.latest_diag)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    def start_publishing(self, rate_hz: float) -> None:
        self.timer = self.node.create_timer(1.0 / rate_hz, self._publish)

    def restart_node_windows(self) -> None:
        """Deactivate and re-activate the node: its rate and latency windows start afresh."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        client = self.sub_node.create_client(ChangeState, f"/{NODE_NAME}/change_state")
        try:
            if not client.wait_for_service(timeout_sec=10):
                raise RuntimeError("the node's change_state service is not available")
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
                future = client.call_async(
                    ChangeState.Request(transition=Transition(id=transition))
                )
                if not self.wait_for(future.done, 30) or not future.result().success:
                    raise RuntimeError(f"lifecycle transition {transition} failed")
        finally:
            self.sub_node.destroy_client(client)

    def stop_publishing(self) -> None:
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
            self.timer = None

    def close(self) -> None:
        self.stop_publishing()
        for executor in self.executors:
            executor.shutdown()
        self.node.destroy_node()
        self.sub_node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def _run_rate(driver: _Driver, rate_hz: float, duration_s: float) -> dict:
    driver.start_publishing(rate_hz)
    time.sleep(WARMUP_S)
    before = driver.diag()
    driver.restart_node_windows()
    sent_before = driver.sent
    with driver.lock:
        driver.latencies.clear()
        driver.recording = True
    start = time.monotonic()
    time.sleep(duration_s)
    with driver.lock:
        driver.recording = False
        samples = list(driver.latencies)
    elapsed = time.monotonic() - start
    sent = driver.sent - sent_before
    driver.stop_publishing()
    time.sleep(1.5)  # the next diagnostics message covers the whole run
    after = driver.diag()

    e2e = [latency for _, latency in samples]
    half = start + elapsed / 2
    first = [lat for t, lat in samples if t < half]
    second = [lat for t, lat in samples if t >= half]
    e2e_p50 = percentile_ms(e2e, 50)
    est_p50 = float(after["inference_latency_p50_ms"] or "nan")
    first_output = float(after["first_output_latency_p50_ms"] or "nan")
    growth = (
        round(percentile_ms(second, 50) - percentile_ms(first, 50), 2) if first and second else None
    )

    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])

    received = delta("messages_received")
    dropped = delta("frames_dropped")
    overhead = round(e2e_p50 - est_p50, 2) if e2e_p50 is not None else None
    return {
        "bench": "node_latency",
        "size": f"{WIDTH}x{HEIGHT}",
        "device": after.get("device"),
        "model_type": after.get("model_type"),
        "outputs_subscribed": ["depth/image", "depth/points"],
        "input_rate_hz": rate_hz,
        "duration_s": round(elapsed, 1),
        "frames_sent": sent,
        "frames_received_by_node": received,
        "frames_dropped": dropped,
        "drop_fraction": round(dropped / received, 3) if received else None,
        "camera_info_missing": delta("camera_info_missing"),
        "output_rate_hz": round(len(e2e) / elapsed, 2),
        "e2e_p50_ms": e2e_p50,
        "e2e_p95_ms": percentile_ms(e2e, 95),
        "e2e_mean_ms": round(1e3 * float(np.mean(e2e)), 2) if e2e else None,
        "estimator_p50_ms": est_p50,
        "estimator_p95_ms": float(after["inference_latency_p95_ms"] or "nan"),
        "queue_wait_p50_ms": float(after["queue_wait_p50_ms"] or "nan"),
        "node_depth_published_p50_ms": first_output,
        "transport_p50_ms": round(e2e_p50 - first_output, 2) if e2e_p50 is not None else None,
        "node_all_outputs_published_p50_ms": float(after["processing_latency_p50_ms"] or "nan"),
        "node_overhead_ms": overhead,
        "node_overhead_excl_queue_wait_ms": (
            round(overhead - float(after["queue_wait_p50_ms"]), 2) if overhead is not None else None
        ),
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "target_overhead_met": overhead is not None and overhead <= TARGET_OVERHEAD_MS,
        "latency_growth_ms": growth,
        "latency_flat": growth is not None and abs(growth) <= max(10.0, 0.1 * (e2e_p50 or 0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "n": len(e2e),
    }


def main() -> None:
    duration_s = float(os.environ.get("BENCH_NODE_SECONDS", "120"))
    input_qos = os.environ.get("BENCH_NODE_INPUT_QOS", "best_effort")
    transport = os.environ.get("BENCH_NODE_TRANSPORT", "large_shm")
    wait_for_fresh = os.environ.get("BENCH_NODE_WAIT_FOR_FRESH", "1") == "1"
    backends = os.environ.get("BENCH_NODE_BACKENDS", "torch,onnxruntime").split(",")
    domain_id = random.randint(1, 200)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp_name:
        tmp = Path(tmp_name)
        with fastdds_transport(transport):
            checkpoint = save_random_moa_checkpoint(tmp)
            for backend in backends:
                _run(
                    tmp, checkpoint, backend, input_qos, transport, wait_for_fresh, duration_s,
                    domain_id,
                )  # fmt: skip


def _run(
    tmp: Path,
    checkpoint: Path,
    backend: str,
    input_qos: str,
    transport: str,
    wait_for_fresh: bool,
    duration_s: float,
    domain_id: int,
) -> None:
    """Serve the checkpoint with the node on ``backend`` and measure each rate (module doc)."""
    log_path = tmp / f"node_{backend}.log"
    backend_params = ["-p", f"backend:={backend}"]
    if backend.endswith("_int8"):
        runtime = backend.removesuffix("_int8")
        int8_file = tmp / f"model_{backend}.onnx"
        if export_main(["--checkpoint", str(checkpoint), "--out", str(int8_file),
                        "--quantize", "int8", "--int8-for", runtime,
                        "--max-abs-rel", "1"]) != 0:  # fmt: skip
            raise RuntimeError("int8 export failed")
        backend_params = ["-p", f"backend:={runtime}", "-p", f"onnx_file:={int8_file}"]
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "moa_depth_ros.node", "--ros-args",
             "-r", f"__node:={NODE_NAME}", "-p", f"checkpoint:={checkpoint}",
             "-p", "device:=cpu", "-p", f"input_qos_reliability:={input_qos}",
             "-p", f"wait_for_fresh_frame:={str(wait_for_fresh).lower()}",
             *backend_params, "-p", f"onnx_cache_dir:={tmp}"],
            env=_node_environment(tmp, domain_id),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        driver = _Driver(domain_id)
        try:
            active = driver.wait_for(
                lambda: driver.diag().get("lifecycle_state") == "active", STARTUP_TIMEOUT_S
            )
            if not active:
                raise RuntimeError("node did not become active:\n" + log_path.read_text())
            rates = os.environ.get("BENCH_NODE_RATES", RATES_HZ)
            for rate_hz in (float(r) for r in rates.split(",")):
                record = _run_rate(driver, rate_hz, duration_s)
                emit(
                    {
                        **record,
                        "backend": backend,
                        "input_qos": input_qos,
                        "transport": transport,
                        "wait_for_fresh_frame": wait_for_fresh,
                        "machine": machine_info(),
                    }
                )
        finally:
            driver.close()
            stop_processes([node], timeout=20)


if __name__ == "__main__":
    main()
