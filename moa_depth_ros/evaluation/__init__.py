"""Evaluation: metrics (``metrics``), per-frame scoring under a published protocol
(``scoring``) and the written report with pictures (``report``). ROS-free, numpy + OpenCV."""
