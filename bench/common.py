"""Shared helpers for benchmarks: machine description, JSON-line output, timing, and the
pieces the node benchmarks share (checkpoint, FastDDS transport, percentiles, RSS)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: FastDDS profile with shared-memory segments large enough for raw VGA and bigger images.
LARGE_SHM_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_shm.xml"


def machine_info() -> dict:
    """What the figures were measured on."""
    info = {
        "host_cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a base dependency
        pass
    return info


def emit(record: dict) -> None:
    """Print one JSON line (flushed so progress is visible under `make bench`)."""
    print(json.dumps(record, sort_keys=True), flush=True)


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summarize_ms(times: list[float]) -> dict:
    """Median / p95 / mean in milliseconds."""
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "median_ms": 1e3 * statistics.median(ordered),
        "p95_ms": 1e3 * p95,
        "mean_ms": 1e3 * statistics.fmean(ordered),
        "n": len(ordered),
    }


def percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of seconds ``values`` in ms (None when there are none)."""
    import numpy as np

    return round(1e3 * float(np.percentile(values, q)), 2) if values else None


def save_random_moa_checkpoint(directory: Path) -> Path:
    """A full-size MoA-DepthCLIP (ViT-B/32, random init: no weights can be downloaded here)."""
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    model = build_model({"type": "moa_depthclip", "clip_pretrained": "none"})
    return save_checkpoint(model, directory / "moa_depthclip_vitb32_random.safetensors")


@contextlib.contextmanager
def fastdds_transport(transport: str) -> Iterator[None]:
    """This process and the children it starts on ``transport``: ``large_shm`` (the shipped
    profile, which every process must load) or ``default`` (stock FastDDS)."""
    if transport not in ("default", "large_shm"):
        raise ValueError(f"transport must be default or large_shm, not {transport!r}")
    saved = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if transport == "large_shm":
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(LARGE_SHM_PROFILE)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        else:
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = saved


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process ``pid`` in MB (VmRSS, VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def pinhole_camera_info(width: int, height: int, focal: float = 525.0):
    """A sensor_msgs/CameraInfo of a centred pinhole camera (header left to the caller)."""
    from sensor_msgs.msg import CameraInfo

    cx, cy = width / 2, height / 2
    return CameraInfo(
        width=width,
        height=height,
        k=[focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0],
        p=[focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def spin_in_threads(context, nodes) -> list:
    """One SingleThreadedExecutor per node, each spun in a daemon thread (so receiving large
    outputs never delays publishing); shut them down with ``executor.shutdown()``."""
    from rclpy.executors import SingleThreadedExecutor

    def spin(executor) -> None:
        with contextlib.suppress(Exception):  # raised when the context shuts down under it
            executor.spin()

    executors = []
    for node in nodes:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executors.append(executor)
        threading.Thread(target=spin, args=(executor,), daemon=True).start()
    return executors


def stop_processes(processes: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGINT to every process, then wait (kill the ones that outlast ``timeout``)."""
    for process in processes:
        process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
