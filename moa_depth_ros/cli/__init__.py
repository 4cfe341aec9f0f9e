"""The installed commands of moa_depth_ros (setup.py console_scripts), the top layer: each
module parses arguments, calls the layers below and turns their errors into one line and an
exit status. ``depth_node`` is the node's own entry point (``moa_depth_ros.node.__main__``);
the training commands live in ``moa_depth_train.cli``."""
