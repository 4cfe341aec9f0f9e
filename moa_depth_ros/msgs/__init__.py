"""ROS messages ↔ numpy without cv_bridge: image codec, PointCloud2 build/read, header stamps.

Message types are imported only inside the functions that build messages, so decoding (bag
evaluation) works without a ROS install.
"""
