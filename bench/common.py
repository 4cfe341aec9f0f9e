"""Shared helpers for benchmarks: machine description and JSON-line output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable


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
