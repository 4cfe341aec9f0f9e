"""Foundation depth models in the node (in-process, no DDS traffic): a relative model refuses to
start without anchoring and publishes metres only once anchored (in inverse depth); a prompt
model takes metric_depth as its prompt and withholds a frame that has none."""

from __future__ import annotations

import time

import numpy as np
from model_helpers.hf_models import hf_checkpoint
from rclpy.lifecycle import TransitionCallbackReturn
from ros_helpers import frames

from moa_depth_ros.msgs.image_codec import depth_to_image_msg, image_msg_to_array
from moa_depth_ros.node.depth_node import DepthNode
from moa_depth_ros.node.outputs import Frame
from moa_depth_ros.node.params import check_model_inputs

W, H = 64, 48
RELATIVE, PROMPT = "depth_anything_relative", "prompt_depth_anything"


class _Capture:
    """Stands in for a lifecycle publisher: keeps what the node publishes."""

    def __init__(self) -> None:
        self.messages: list = []

    def publish(self, message) -> None:
        self.messages.append(message)

    def get_subscription_count(self) -> int:
        return 1


def _run(node: DepthNode, stamp_ns: int, metric: np.ndarray | None) -> np.ndarray | None:
    """One frame through the node's worker path, with its metric_depth (if any) received
    first; the published depth image, or None when the frame was withheld."""
    camera = node._cameras[""]
    if metric is not None:
        msg = depth_to_image_msg(np.nan_to_num(metric, nan=0.0), frames.header(stamp_ns), "32FC1")
        camera.anchoring.receive_depth(msg)
        assert camera.anchoring.drain()
    image = frames.image_msg(stamp_ns, W, H)
    rgb = frames.pattern_rgb(stamp_ns, W, H)
    camera.sync.add_info(frames.camera_info(stamp_ns, W, H))
    sent = camera.publishers["depth/image"]
    before = len(sent.messages)
    node._process_batch({"": Frame(rgb, image.header, stamp_ns, time.monotonic())})
    return image_msg_to_array(sent.messages[-1]) if len(sent.messages) > before else None


def _configured(make_node, checkpoint, **parameters) -> DepthNode:
    node = make_node(checkpoint=str(checkpoint), device="cpu", autostart=False,
                 publish_points=False, publish_colorized=False, **parameters)  # fmt: skip
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    for camera in node._cameras.values():
        camera.publishers = {topic: _Capture() for topic in camera.publishers}
    return node


def test_model_inputs_check_names_the_parameter() -> None:
    assert check_model_inputs("metric", False, {"anchor_mode": "none"}) is None
    assert check_model_inputs("relative", False, {"anchor_mode": "scale_shift"}) is None
    relative = check_model_inputs("relative", False, {"left.anchor_mode": "none"})
    assert relative.startswith("the model gives relative depth, not metres: set left.anchor_mode")
    prompt = check_model_inputs("metric", True, {"anchor_mode": "scale"})
    assert "anchor_mode must be none" in prompt and "prompt" in prompt
    assert check_model_inputs("metric", True, {"anchor_mode": "none"}) is None


def test_a_relative_model_without_anchoring_refuses_to_configure(make_node, tmp_path, capfd):
    node = make_node(checkpoint=str(hf_checkpoint(RELATIVE, tmp_path)), device="cpu",
                     autostart=False)  # fmt: skip
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        lines = [line for line in capfd.readouterr().err.splitlines() if "configure failed" in line]
        assert len(lines) == 1 and "the model gives relative depth, not metres" in lines[0]
    finally:
        node.destroy_node()


def test_a_relative_model_publishes_metres_once_anchored_in_inverse_depth(make_node, tmp_path):
    node = _configured(make_node, hf_checkpoint(RELATIVE, tmp_path), anchor_mode="scale_shift",
                       anchor_smoothing=0.0, max_depth=50.0)  # fmt: skip
    try:
        estimator = node._estimator
        assert estimator.output_kind == "relative"
        stamps = [1_000_000_000 + i * 100_000_000 for i in range(3)]
        # The scene the anchors measure: exactly what an inverse-depth fit can recover.
        relative = estimator.predict(frames.pattern_rgb(stamps[1], W, H)).depth
        truth = (1.0 / (0.05 * relative + 0.1)).astype(np.float32)
        # No anchor yet: nothing metric to publish, and the frame is counted as withheld.
        assert _run(node, stamps[0], None) is None
        stats = node._cameras[""].stats.snapshot()
        assert stats.frames_withheld == 1 and stats.frames_published == 0
        anchors = np.where(np.random.default_rng(0).random((H, W)) < 0.2, truth, np.nan)
        depth = _run(node, stamps[1], anchors.astype(np.float32))
        own = estimator.predict(frames.pattern_rgb(stamps[1], W, H)).depth
        expected = 1.0 / (0.05 * own + 0.1)
        assert depth is not None
        assert np.nanmax(np.abs(depth - expected) / expected) < 1e-3
        # Later frames without anchors keep the fit.
        assert _run(node, stamps[2], None) is not None
        outcomes = node._cameras[""].anchoring.snapshot().outcomes
        assert outcomes == {"missing": 2, "anchored": 1}
    finally:
        node.destroy_node()


def test_a_prompt_model_takes_metric_depth_as_its_prompt(make_node, tmp_path, capfd):
    checkpoint = hf_checkpoint(PROMPT, tmp_path)
    node = _configured(make_node, checkpoint, max_depth=50.0)
    try:
        camera = node._cameras[""]
        assert camera.anchoring is not None and camera.anchoring.mode == "depth_prompt"
        metric = np.where(np.random.default_rng(1).random((H, W)) < 0.3, 2.5, np.nan)
        metric = metric.astype(np.float32)
        stamp = 2_000_000_000
        depth = _run(node, stamp, metric)
        expected = node._estimator.predict(
            frames.pattern_rgb(stamp, W, H), (node._settings.min_depth, 50.0), prompt_depth=metric
        ).depth
        np.testing.assert_array_equal(depth, expected)
        # Without a prompt the frame is withheld, said on /diagnostics, never guessed.
        assert _run(node, stamp + 100_000_000, None) is None
        snapshot = camera.anchoring.snapshot()
        assert snapshot.outcomes == {"prompted": 1, "missing": 1}
        assert snapshot.problem.startswith("no depth prompt: no metric anchor")
        assert camera.stats.snapshot().frames_withheld == 1
        assert snapshot.values()["anchor_mode"] == "depth_prompt"
    finally:
        node.destroy_node()
    bad = make_node(checkpoint=str(checkpoint), device="cpu", autostart=False,
                    anchor_mode="scale")  # fmt: skip
    try:
        assert bad.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "anchor_mode must be none" in capfd.readouterr().err
    finally:
        bad.destroy_node()


def test_several_cameras_each_get_their_own_prompt_in_one_batch(make_node, tmp_path, capfd):
    """Multi-camera: one forward for both cameras, each with its own metric depth as prompt;
    a relative model names the camera whose anchor_mode is missing."""
    checkpoint = hf_checkpoint(PROMPT, tmp_path)
    node = _configured(make_node, checkpoint, cameras=["left", "right"], max_depth=50.0)
    try:
        stamp = 3_000_000_000
        prompts = {
            "left": np.full((H, W), 1.5, np.float32),
            "right": np.full((H, W), 4.0, np.float32),
        }
        batch = {}
        for name, prompt in prompts.items():
            camera = node._cameras[name]
            camera.anchoring.receive_depth(
                depth_to_image_msg(prompt, frames.header(stamp), "32FC1")
            )
            assert camera.anchoring.drain()
            camera.sync.add_info(frames.camera_info(stamp, W, H))
            image = frames.image_msg(stamp, W, H)
            rgb = frames.pattern_rgb(stamp, W, H)
            batch[name] = Frame(rgb, image.header, stamp, time.monotonic())
        node._process_batch(batch)
        assert node._batch_sizes == {2: 1}  # one forward for both
        for name, prompt in prompts.items():
            published = node._cameras[name].publishers["depth/image"].messages
            expected = node._estimator.predict(
                frames.pattern_rgb(stamp, W, H), (node._settings.min_depth, 50.0),
                prompt_depth=prompt,
            ).depth  # fmt: skip
            np.testing.assert_allclose(image_msg_to_array(published[-1]), expected, rtol=1e-5)
        left = image_msg_to_array(node._cameras["left"].publishers["depth/image"].messages[-1])
        right = image_msg_to_array(node._cameras["right"].publishers["depth/image"].messages[-1])
        assert not np.allclose(left, right)  # the prompt decides the metres
    finally:
        node.destroy_node()
    relative = make_node(checkpoint=str(hf_checkpoint(RELATIVE, tmp_path)), device="cpu",
                         autostart=False, cameras=["left", "right"], anchor_mode="scale_shift",
                         **{"right.anchor_mode": "none"})  # fmt: skip
    try:
        assert relative.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "set right.anchor_mode to scale or scale_shift" in capfd.readouterr().err
    finally:
        relative.destroy_node()


def test_a_prompt_models_anchor_fill_publishes_the_sensor_where_it_measured(make_node, tmp_path):
    node = _configured(make_node, hf_checkpoint(PROMPT, tmp_path), max_depth=50.0,
                       anchor_fill="holes")  # fmt: skip
    try:
        metric = np.where(np.random.default_rng(2).random((H, W)) < 0.3, 2.5, np.nan)
        metric = metric.astype(np.float32)
        stamp = 4_000_000_000
        depth = _run(node, stamp, metric)
        model = node._estimator.predict(
            frames.pattern_rgb(stamp, W, H), (node._settings.min_depth, 50.0), prompt_depth=metric
        ).depth
        measured = np.isfinite(metric)
        np.testing.assert_array_equal(depth[measured], metric[measured])
        np.testing.assert_array_equal(depth[~measured], model[~measured])
    finally:
        node.destroy_node()
