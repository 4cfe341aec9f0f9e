"""Configure failures say why, in one log line and on /diagnostics: a bad per-camera
parameter (checked like the node-wide ones), or anything that fails while configuring. The
node's Python ``logging`` records (the backends' hints) go through its ROS logger."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from ros_helpers.harness import NodeProcess, ros_environment

from moa_depth_ros.node import depth_node
from moa_depth_ros.node.depth_node import DepthNode
from moa_depth_ros.node.diagnostics import Level

BOGUS = "left.anchor_mode must be one of none, scale, scale_shift, got 'bogus'"


def published_status(node: DepthNode):
    """The /diagnostics status the node publishes next (its one camera's, or the node's)."""
    sent = []
    node._diagnostics_publisher.publish = sent.append
    node._publish_diagnostics()
    return sent[0].status[0]


def test_a_bad_per_camera_anchor_mode_fails_configure_saying_so(make_node, capfd) -> None:
    node = make_node(cameras=["left", "right"], autostart=False,
                     **{"left.anchor_mode": "bogus"})  # fmt: skip
    try:
        for _ in range(2):  # and again: the same line, not an empty failure
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        lines = [line for line in capfd.readouterr().err.splitlines() if "configure failed" in line]
        assert len(lines) == 2 and lines[0].endswith(f"configure failed: {BOGUS}"), lines
        status = published_status(node)
        assert status.level == bytes([Level.ERROR]) and status.message == f"not configured: {BOGUS}"
    finally:
        node.destroy_node()


def test_any_failure_while_configuring_is_logged_and_released(make_node, capfd, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot start the anchor decoder thread")

    monkeypatch.setattr(depth_node, "CameraAnchoring", broken)
    node = make_node(anchor_mode="scale", autostart=False)
    backend = SimpleNamespace(name="torch", provider="cpu", precision="fp32")
    monkeypatch.setattr(node, "_load_estimator", lambda: SimpleNamespace(
        device="cpu", model_type="moa_depthclip", backend=backend, output_kind="metric",
        takes_depth_prompt=False))  # fmt: skip
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        reason = "cannot start the anchor decoder thread"
        assert f"configure failed: {reason}" in capfd.readouterr().err
        assert node._estimator is None and all(not c.publishers for c in node._cameras.values())
        assert published_status(node).message == f"not configured: {reason}"
    finally:
        node.destroy_node()


def test_package_log_records_go_through_the_node_logger(make_node, capfd) -> None:
    backend_log = logging.getLogger("moa_depth_ros.inference.onnxruntime_backend")
    node = make_node(autostart=False)
    try:
        backend_log.warning("%s is an int8 graph for OpenVINO", "m.onnx")
        err = capfd.readouterr().err
        line = next(line for line in err.splitlines() if "int8 graph" in line)
        assert "[WARN]" in line and "[depth_node]: m.onnx is an int8 graph for OpenVINO" in line
    finally:
        node.destroy_node()
    backend_log.warning("after the node")  # no longer routed to the (destroyed) node
    assert "[depth_node]: after the node" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("source", ["arguments", "params_file"])
def test_a_bad_per_camera_parameter_at_start_exits_1_naming_it(tmp_path, source: str) -> None:
    parameters = {"cameras": ["left", "right"], "left.anchor_mode": "bogus"}
    extra: list[str] = []
    if source == "params_file":
        params = tmp_path / "params.yaml"
        params.write_text(
            "/**:\n  ros__parameters:\n    cameras: [left, right]\n"
            "    left:\n      anchor_mode: bogus\n"
        )
        parameters, extra = {}, ["--params-file", str(params)]
    env = ros_environment(tmp_path / "ros_log", random.randint(1, 200))
    node = NodeProcess("bad_camera", "/bad", parameters, env, tmp_path / "node.log", extra)
    try:
        assert node.wait(timeout=90) == 1
    finally:
        node.stop()
    log = node.log_text()
    assert sum(f"configure failed: {BOGUS}" in line for line in log.splitlines()) == 1, log
