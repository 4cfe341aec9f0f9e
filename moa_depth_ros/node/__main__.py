"""Entry point of the depth node: ``depth_node`` / ``python -m moa_depth_ros.node``.

The node itself lives in :mod:`moa_depth_ros.node.depth_node`; this module only runs it, so the
console script and ``python -m`` behave the same, ``--ros-args`` included.
"""

from __future__ import annotations

import os


def main(args: list[str] | None = None) -> None:
    """Run the depth node until shutdown; exit non-zero when it cannot start."""
    # torch's OpenMP threads spin-wait by default. On a robot computer the node shares its
    # cores with drivers and other nodes, and spinning threads then fight over them: measured
    # on 2 busy cores, a ViT-B/32 forward took 3.1 s instead of 0.2 s. Passive waiting costs
    # little on idle cores. Must be set before torch is imported; an exported value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from moa_depth_ros.node.depth_node import exit_now, run_depth_node

    exit_now(run_depth_node(args))


if __name__ == "__main__":
    main()
