"""Helpers for the bag tool tests (test_bag_tools.py, test_demo.py)."""
