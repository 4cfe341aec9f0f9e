"""Environment for child processes that must meet only each other: a private ROS 2 graph.

Used by the demo, the benchmarks and the multi-process tests (not part of the installed
package: test plumbing stays out of the product). No rclpy import: it only builds
an environment dictionary.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path


def private_graph_environment(
    log_dir: Path,
    domain_id: int | None = None,
    pythonpath: Iterable[Path] = (),
    **overrides: str,
) -> dict[str, str]:
    """os.environ plus a random (or given) ROS_DOMAIN_ID, localhost-only discovery, ROS logs in
    `log_dir`, `pythonpath` prepended, offline Hugging Face hub; `overrides` are applied last."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id if domain_id is not None else random.randint(1, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(log_dir),
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
    )
    paths = [str(p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH", "")]))
    env.update(overrides)
    # ROS_AUTOMATIC_DISCOVERY_RANGE replaces ROS_LOCALHOST_ONLY (deprecated since Jazzy, which
    # warns when it is set); drop an inherited one so the range above is the only setting.
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env
