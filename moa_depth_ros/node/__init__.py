"""The live depth node (rclpy): lifecycle node, parameters, frame slots, worker, outputs and
diagnostics.

Run it with ``depth_node`` or ``python -m moa_depth_ros.node``; this package's ``__init__``
imports nothing, so ``python -m`` can set the OpenMP policy before torch loads.
"""
