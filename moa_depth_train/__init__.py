"""moa_depth_train: datasets, augmentation, losses, and the training and evaluation CLIs.

Installed beside ``moa_depth_ros`` (like open_clip ships ``open_clip_train``): it imports the
models and the evaluation core from ``moa_depth_ros``, never the other way round, and never ROS.
"""
