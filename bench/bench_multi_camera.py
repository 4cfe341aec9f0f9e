"""Several cameras: one multi-camera node (batched inference) vs one node per camera.

For N = 1, 2, 4 cameras (``BENCH_MULTI_CAMERAS``), each publishing 640×480 images (+
camera_info) at 10 Hz (``BENCH_MULTI_RATE_HZ``), this process drives, one after the other:

* ``one_node``: one depth node with ``cameras:=[cam0, ..., camN-1]`` (one model, the newest
  frame of every camera in one forward);
* ``separate_nodes``: N single-camera depth nodes, node i in namespace ``/cam<i>``: the same
  topics, N copies of the model competing for the same cores (N = 1 is the same as one_node
  and is run once).

Every node serves the same full-size MoA-DepthCLIP (ViT-B/32, random init) on the CPU, all
processes use the shipped large-SHM FastDDS profile and ``OMP_WAIT_POLICY=PASSIVE`` (so the
separate nodes' OpenMP threads do not spin against each other). The cameras are not
synchronized: one timer publishes them in turn, evenly staggered (the harder case for batching;
a hardware-triggered stereo pair lines up better). This process subscribes to every camera's
``depth/image`` and ``depth/points``.

Reported per configuration after ``WARMUP_S``, over ``BENCH_MULTI_SECONDS`` (default 30 s):
aggregate ``depth/image`` rate over all cameras, e2e latency (receipt − input stamp) p50/p95
per camera and overall, total current and peak RSS of the node processes, and for the
multi-camera node its batch size distribution. Then, per N ≥ 2, one_node / separate_nodes
ratios of aggregate rate and total RSS against the target (≥ 1.3× rate at ≤ 0.6× memory).
On a CUDA machine (``BENCH_MULTI_DEVICE=cuda``) the nodes' GPU memory comes from nvidia-smi.
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
    rss_mb,
    save_random_moa_checkpoint,
    spin_in_threads,
    stop_processes,
)
from moa_depth_ros.msgs.stamps import stamp_to_ns
from tools.ros_graph import private_graph_environment

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
WARMUP_S = 8.0
STARTUP_TIMEOUT_S = 240.0
TARGET_RATE_RATIO = 1.3
TARGET_MEMORY_RATIO = 0.6


class _Driver:
    """This process's rclpy nodes: staggered camera publisher, output subscriber, diagnostics."""

    def __init__(self, domain_id: int, cameras: list[str]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from moa_depth_ros.msgs.image_codec import rgb_to_image_msg

        self._rclpy = rclpy
        self.cameras = cameras
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("bench_cameras", context=self.context)
        self.sub_node = rclpy.create_node("bench_outputs", context=self.context)
        driver_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        rng = np.random.default_rng(0)
        self.images = [
            rgb_to_image_msg(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), Header())
            for _ in cameras
        ]
        self.info = pinhole_camera_info(WIDTH, HEIGHT)
        self.image_pubs = [
            self.node.create_publisher(Image, f"/{c}/image", driver_qos) for c in cameras
        ]
        self.info_pubs = [
            self.node.create_publisher(CameraInfo, f"/{c}/camera_info", driver_qos) for c in cameras
        ]
        self.lock = threading.Lock()
        self.recording = False
        self.latencies: dict[str, list[float]] = {c: [] for c in cameras}
        self.sent = 0
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.subscriptions = []
        for camera in cameras:
            self.subscriptions.append(
                self.sub_node.create_subscription(
                    Image, f"/{camera}/depth/image", self._on_depth(camera), reliable
                )
            )
            self.subscriptions.append(
                self.sub_node.create_subscription(
                    PointCloud2, f"/{camera}/depth/points", lambda _: None, reliable
                )
            )
        self.sub_node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.timer = None
        self.executors = spin_in_threads(self.context, (self.node, self.sub_node))

    def _publish_next(self) -> None:
        index = self.sent % len(self.cameras)
        msg = self.images[index]
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = f"{self.cameras[index]}_optical_frame"
        self.info.header = msg.header
        self.info_pubs[index].publish(self.info)
        self.image_pubs[index].publish(msg)
        self.sent += 1

    def _on_depth(self, camera: str):
        def on_depth(msg) -> None:
            now_ns = self.sub_node.get_clock().now().nanoseconds
            with self.lock:
                if self.recording:
                    latency = (now_ns - stamp_to_ns(msg.header.stamp)) * 1e-9
                    self.latencies[camera].append(latency)

        return on_depth

    def _on_diag(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def all_active(self, statuses: int) -> bool:
        with self.lock:
            states = [d.get("lifecycle_state") for d in self.diagnostics.values()]
        return states.count("active") >= statuses

    def outputs_matched(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subscriptions)

    def diagnostics_of(self, name: str) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics.get(f"{name}: depth estimation", {}))

    def start(self, rate_hz: float) -> None:
        # One timer for all cameras, each camera every 1/rate_hz s, evenly staggered.
        self.timer = self.node.create_timer(1.0 / (rate_hz * len(self.cameras)), self._publish_next)

    def record(self, seconds: float) -> tuple[dict[str, list[float]], float, int]:
        with self.lock:
            for values in self.latencies.values():
                values.clear()
            self.recording = True
        sent_before, start = self.sent, time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.recording = False
            samples = {c: list(v) for c, v in self.latencies.items()}
        return samples, time.monotonic() - start, self.sent - sent_before

    def close(self) -> None:
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
        for executor in self.executors:
            executor.shutdown()
        self.node.destroy_node()
        self.sub_node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def _gpu_memory_mb(pids: list[int]) -> float | None:
    """Total GPU memory of ``pids`` from nvidia-smi (None without one)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    used = {int(p): float(m) for p, m in (line.split(",") for line in out.strip().splitlines())}
    return round(sum(used.get(pid, 0.0) for pid in pids), 1)


def _start_nodes(
    config: str, cameras: list[str], checkpoint: Path, device: str, env: dict, tmp: Path
) -> list[subprocess.Popen]:
    common = ["-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}"]
    if config == "one_node":
        launches = [["-r", "__node:=multi_depth", "-p", f"cameras:=[{', '.join(cameras)}]"]]
    else:
        launches = [["-r", f"__node:=depth_{c}", "-r", f"__ns:=/{c}"] for c in cameras]
    processes = []
    for index, ros_args in enumerate(launches):
        log = open(tmp / f"{config}_{len(cameras)}_{index}.log", "w")  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "moa_depth_ros.node", "--ros-args", *ros_args, *common],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )
    return processes


def _batch_sizes(text: str) -> dict[int, int]:
    """'1: 40, 2: 113' (node diagnostics) → {1: 40, 2: 113}."""
    pairs = (item.split(": ") for item in text.split(", ") if item)
    return {int(size): int(count) for size, count in pairs}


def _measure(
    config: str, cameras: list[str], checkpoint: Path, device: str, rate_hz: float,
    seconds: float, tmp: Path,
) -> dict:  # fmt: skip
    domain_id = random.randint(1, 200)
    env = private_graph_environment(tmp, domain_id, pythonpath=[REPO], OMP_WAIT_POLICY="PASSIVE")
    processes = _start_nodes(config, cameras, checkpoint, device, env, tmp)
    driver = _Driver(domain_id, cameras)
    try:
        statuses = 1 + len(cameras) if config == "one_node" and len(cameras) > 1 else len(cameras)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (driver.all_active(statuses) and driver.outputs_matched()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{config} with {len(cameras)} cameras did not become active")
            time.sleep(0.2)
        driver.start(rate_hz)
        time.sleep(WARMUP_S)
        before = driver.diagnostics_of("multi_depth")
        samples, elapsed, sent = driver.record(seconds)
        memory = [rss_mb(p.pid) for p in processes]
        gpu_mb = _gpu_memory_mb([p.pid for p in processes]) if device.startswith("cuda") else None
        time.sleep(1.5)  # the next diagnostics cover the whole window
        after = driver.diagnostics_of("multi_depth")
    finally:
        driver.close()
        stop_processes(processes)
    everything = [latency for values in samples.values() for latency in values]
    record = {
        "bench": "multi_camera",
        "config": config,
        "cameras": len(cameras),
        "processes": len(processes),
        "input_rate_hz_per_camera": rate_hz,
        "size": f"{WIDTH}x{HEIGHT}",
        "device": device,
        "duration_s": round(elapsed, 1),
        "frames_sent": sent,
        "aggregate_output_rate_hz": round(len(everything) / elapsed, 2),
        "e2e_p50_ms": percentile_ms(everything, 50),
        "e2e_p95_ms": percentile_ms(everything, 95),
        "per_camera": {
            camera: {
                "output_rate_hz": round(len(values) / elapsed, 2),
                "e2e_p50_ms": percentile_ms(values, 50),
                "e2e_p95_ms": percentile_ms(values, 95),
            }
            for camera, values in samples.items()
        },
        "rss_total_mb": round(sum(current for current, _ in memory), 1),
        "rss_peak_total_mb": round(sum(peak for _, peak in memory), 1),
        "gpu_memory_total_mb": gpu_mb,
    }
    if config == "one_node" and len(cameras) > 1:
        old, new = _batch_sizes(before.get("batch_sizes", "")), _batch_sizes(after["batch_sizes"])
        window = {size: count - old.get(size, 0) for size, count in new.items()}
        record["batch_sizes"] = {size: count for size, count in window.items() if count > 0}
    return record


def main() -> None:
    counts = [int(n) for n in os.environ.get("BENCH_MULTI_CAMERAS", "1,2,4").split(",")]
    rate_hz = float(os.environ.get("BENCH_MULTI_RATE_HZ", "10"))
    seconds = float(os.environ.get("BENCH_MULTI_SECONDS", "30"))
    device = os.environ.get("BENCH_MULTI_DEVICE", "cpu")
    with (
        tempfile.TemporaryDirectory(prefix="bench_multi_") as tmp_name,
        fastdds_transport("large_shm"),
    ):
        tmp = Path(tmp_name)
        checkpoint = save_random_moa_checkpoint(tmp)
        for count in counts:
            cameras = [f"cam{i}" for i in range(count)]
            results = {}
            for config in ("one_node", "separate_nodes") if count > 1 else ("one_node",):
                results[config] = _measure(
                    config, cameras, checkpoint, device, rate_hz, seconds, tmp
                )
                emit({**results[config], "machine": machine_info()})
            if count > 1:
                one, separate = results["one_node"], results["separate_nodes"]
                rate_ratio = one["aggregate_output_rate_hz"] / separate["aggregate_output_rate_hz"]
                memory_ratio = one["rss_total_mb"] / separate["rss_total_mb"]
                emit(
                    {
                        "bench": "multi_camera_vs_separate",
                        "cameras": count,
                        "rate_ratio": round(rate_ratio, 2),
                        "rss_ratio": round(memory_ratio, 2),
                        "target": f">= {TARGET_RATE_RATIO}x rate at <= {TARGET_MEMORY_RATIO}x RSS",
                        "target_met": rate_ratio >= TARGET_RATE_RATIO
                        and memory_ratio <= TARGET_MEMORY_RATIO,
                    }
                )


if __name__ == "__main__":
    main()
