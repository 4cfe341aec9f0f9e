"""``moa-depth-bag``: bag files offline (rosbags) and, with rclpy imported lazily, live play/record.

Nothing here imports rclpy or message packages at import time: ``info``, ``eval`` and
``make-demo`` run on machines without ROS.
"""
