"""Helpers for the multi-process ROS tests of the depth node (test_node.py, bench)."""
