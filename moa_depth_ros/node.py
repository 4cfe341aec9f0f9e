"""Entry point of the depth node: ``depth_node`` / ``python -m moa_depth_ros.node``.

The node itself lives in :mod:`moa_depth_ros.ros.depth_node`; this module only runs it, so the
console script and ``python -m`` behave the same, ``--ros-args`` included.
"""

from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> None:
    """Run the depth node until shutdown; exit non-zero when it cannot start."""
    from moa_depth_ros.ros.depth_node import run_depth_node

    sys.exit(run_depth_node(args))


if __name__ == "__main__":
    main()
