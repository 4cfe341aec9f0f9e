"""Live metric anchoring across processes: a mis-scaled model made metric by 1 % of pixels.

The node runs in its own process (``/robot/anchored``) with two cameras: ``left`` anchors to
``left/metric_depth`` / ``left/metric_points`` (``anchor_mode: scale``), ``right`` has
``right.anchor_mode: none``. Its checkpoint is a tiny MoA-DepthCLIP whose bin centres are 1.7
times those of a second, otherwise identical checkpoint, so its depth is exactly 1.7 times that
model's: the scene's ground truth here is what the second model sees, computed in this process.
The test process publishes images, camera_info and anchors (a metric sensor with 99 % holes)
and subscribes to the depth and /diagnostics.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MOA
from ros_helpers import frames
from ros_helpers.frames import new_stamps
from ros_helpers.harness import NodeProcess, RosProbe, localhost_discovery, ros_environment
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from moa_depth_ros.anchoring import sparse_subset
from moa_depth_ros.geometry import CameraIntrinsics, depth_to_points
from moa_depth_ros.msgs.image_codec import depth_to_image_msg, image_msg_to_array
from moa_depth_ros.msgs.pointcloud import make_pointcloud2, pack_cloud

NAMESPACE = "/robot"
NODE = "anchored"
W, H = 160, 120
MIS_SCALE = 1.7
ANCHOR_FRACTION = 0.01
DEPTH_RANGE = (0.1, 20.0)  # wide enough for the mis-scaled depth not to be clipped


class Rig:
    def __init__(self, tmp: Path) -> None:
        import torch

        from moa_depth_ros.inference.load import load_estimator
        from moa_depth_ros.inference.options import InferenceOptions
        from moa_depth_ros.models import build_model
        from moa_depth_ros.models.checkpoint import save_checkpoint

        torch.manual_seed(0)
        truth = build_model(TINY_MOA)
        wrong = build_model(
            {**TINY_MOA, "min_depth": 0.1 * MIS_SCALE, "max_depth": 10.0 * MIS_SCALE}
        )
        state = {k: v for k, v in truth.state_dict().items() if k != "head.bin_centers"}
        wrong.load_state_dict(state, strict=False)
        truth_file = save_checkpoint(truth, tmp / "truth.safetensors")
        wrong_file = save_checkpoint(wrong, tmp / "mis_scaled.safetensors")
        self.truth_model = load_estimator(
            InferenceOptions(checkpoint=str(truth_file), device="cpu")
        )

        domain = random.randint(1, 200)
        env = ros_environment(tmp / "ros_log", domain)
        self.node = NodeProcess(
            NODE,
            NAMESPACE,
            {
                "checkpoint": str(wrong_file),
                "device": "cpu",
                "cameras": ["left", "right"],
                "right.anchor_mode": "none",
                "anchor_mode": "scale",
                "min_depth": DEPTH_RANGE[0],
                "max_depth": DEPTH_RANGE[1],
                "input_qos_reliability": "reliable",
                "input_qos_depth": 100,
            },
            env,
            tmp / "anchored.log",
        )
        self.probe = RosProbe(domain)
        node = self.probe.node
        qos = RosProbe.RELIABLE
        self.publishers = {
            (camera, topic): node.create_publisher(kind, f"{NAMESPACE}/{camera}/{topic}", qos)
            for camera in ("left", "right")
            for topic, kind in (
                ("image", Image),
                ("camera_info", CameraInfo),
                ("metric_depth", Image),
                ("metric_points", PointCloud2),
            )
        }

    def close(self) -> None:
        self.probe.close()
        self.node.stop()

    def truth(self, stamp_ns: int) -> np.ndarray:
        rgb = frames.pattern_rgb(stamp_ns, W, H)
        return self.truth_model.predict(rgb, DEPTH_RANGE).depth

    def publish(self, camera: str, topic: str, msg) -> None:
        self.publishers[(camera, topic)].publish(msg)

    def send_frame(self, camera: str, stamp_ns: int) -> None:
        self.publish(camera, "camera_info", frames.camera_info(stamp_ns, W, H))
        self.publish(camera, "image", frames.image_msg(stamp_ns, W, H))

    def depth(self, camera: str, stamp_ns: int, timeout: float = 20.0) -> np.ndarray:
        msg = self.probe.first_message(f"{NAMESPACE}/{camera}/depth/image", [stamp_ns], timeout)
        assert msg is not None, f"no depth for {camera} at {stamp_ns}:\n{self.node.log_text()}"
        return image_msg_to_array(msg)

    def diagnostic(self, camera: str, predicate=lambda d: True, timeout: float = 10.0):
        import time

        diag = self.probe.diagnostic(f"{NODE}/{camera}", predicate, timeout, time.monotonic())
        assert diag is not None, f"no diagnostics for {camera}"
        return diag


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    with localhost_discovery():
        r = Rig(tmp_path_factory.mktemp("anchoring"))
        try:
            active = r.probe.diagnostic(
                NODE, lambda d: d.values["lifecycle_state"] == "active", timeout=120
            )
            assert active is not None, r.node.log_text()
            for camera in ("left", "right"):
                r.probe.subscribe_outputs(f"{NAMESPACE}/{camera}", ["depth/image"])
            inputs = [r.publishers[("left", t)] for t in ("metric_depth", "metric_points")]
            inputs += [r.publishers[(c, "image")] for c in ("left", "right")]
            assert r.probe.wait_until(
                lambda: (
                    all(r.probe.outputs_matched(f"{NAMESPACE}/{c}") for c in ("left", "right"))
                    and all(p.get_subscription_count() > 0 for p in inputs)
                ),
                30,
            )
            yield r
        finally:
            r.close()


def abs_rel(depth: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(depth - truth) / truth))


def anchor_image(truth: np.ndarray, stamp_ns: int, encoding: str, frame_id: str = frames.FRAME_ID):
    """1 % of the truth as a real sensor gives it: 2 % noise, and a tenth of the returns from
    something else (glass, a flying pixel) at 0.3 m."""
    rng = np.random.default_rng(stamp_ns % 2**32)
    sparse = sparse_subset(truth, ANCHOR_FRACTION, rng)
    sparse = sparse * rng.normal(1.0, 0.02, sparse.shape).astype(np.float32)
    sparse[np.isfinite(sparse) & (rng.random(sparse.shape) < 0.1)] = 0.3
    return depth_to_image_msg(sparse, frames.header(stamp_ns, frame_id), encoding)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_percent_of_pixels_makes_the_mis_scaled_model_metric(rig: Rig) -> None:
    stamps = new_stamps(5)
    truths = {stamp: rig.truth(stamp) for stamp in stamps}
    # Before any anchor: the model as it is, 1.7 times too far.
    rig.send_frame("left", stamps[0])
    before = abs_rel(rig.depth("left", stamps[0]), truths[stamps[0]])
    assert before == pytest.approx(MIS_SCALE - 1, abs=1e-3)
    for index, stamp in enumerate(stamps[1:]):
        encoding = "16UC1" if index % 2 else "32FC1"  # a RealSense-style mm image, or metres
        rig.publish("left", "metric_depth", anchor_image(truths[stamp], stamp, encoding))
        rig.send_frame("left", stamp)
        rig.send_frame("right", stamp)
        after = abs_rel(rig.depth("left", stamp), truths[stamp])
        print(f"AbsRel before anchoring {before:.3f}, anchored ({encoding}) {after:.4f}")
        assert after < 0.05, (index, after)
        # The other camera does not anchor: its depth is the model's, as without anchoring.
        right = abs_rel(rig.depth("right", stamp), truths[stamp])
        assert right == pytest.approx(MIS_SCALE - 1, abs=1e-3)
    diag = rig.diagnostic("left", lambda d: d.int("anchor_frames_anchored") >= 4)
    assert float(diag.values["anchor_scale"]) == pytest.approx(1 / MIS_SCALE, rel=0.01)
    assert int(diag.values["anchor_points"]) >= 100  # 1 % of 19200 pixels
    assert diag.int("anchor_frames_missing") >= 1  # the first frame
    assert diag.values["anchor_mode"] == "scale"
    assert "anchor_mode" not in rig.diagnostic("right").values


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sparse_point_cloud_in_the_optical_frame_anchors_too(rig: Rig) -> None:
    (stamp,) = new_stamps(1)
    truth = rig.truth(stamp)
    fx, fy, cx, cy = frames.intrinsics(W, H)
    sparse = sparse_subset(truth, ANCHOR_FRACTION, np.random.default_rng(7))
    points = depth_to_points(sparse, CameraIntrinsics(fx, fy, cx, cy, W, H))
    buffer, step, fields = pack_cloud(points)
    cloud = make_pointcloud2(frames.header(stamp), buffer, W, H, step, fields)
    rig.publish("left", "metric_points", cloud)
    before = rig.diagnostic("left").int("anchor_frames_anchored")
    rig.send_frame("left", stamp)
    assert abs_rel(rig.depth("left", stamp), truth) < 0.05
    assert rig.diagnostic("left", lambda d: d.int("anchor_frames_anchored") > before)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bad_late_and_missing_anchors_are_counted_and_never_block_depth(rig: Rig) -> None:
    (good,) = new_stamps(1)
    rig.publish("left", "metric_depth", anchor_image(rig.truth(good), good, "32FC1"))
    rig.send_frame("left", good)
    rig.depth("left", good)
    start = rig.diagnostic("left", lambda d: d.values["last_anchor_problem"] == "").values
    counters = (
        "anchor_frames_missing", "anchor_frames_too_few_points", "anchor_frames_wrong_size",
        "anchor_frames_wrong_frame", "anchors_late", "anchors_rejected",
    )  # fmt: skip
    stamps = new_stamps(7)
    truths = [rig.truth(s) for s in stamps]
    nan_anchor = depth_to_image_msg(np.full((H, W), np.nan, np.float32), frames.header(stamps[0]))
    small = anchor_image(truths[1][: H // 2, : W // 2], stamps[1], "32FC1")
    lidar = anchor_image(truths[2], stamps[2], "32FC1", frame_id="lidar_link")
    colour = frames.image_msg(stamps[3], W, H)  # rgb8 on the depth topic: malformed
    # A perfect fit 6.7e29 times too far: not data (beyond max_depth), never a NaN image.
    huge = sparse_subset(truths[4], ANCHOR_FRACTION, np.random.default_rng(4)) * np.float32(6.7e29)
    huge = depth_to_image_msg(huge, frames.header(stamps[4]))
    anchors = (nan_anchor, small, lidar, colour, huge)
    for stamp, truth, anchor in zip(stamps[:5], truths[:5], anchors, strict=True):
        rig.publish("left", "metric_depth", anchor)
        rig.send_frame("left", stamp)
        depth = rig.depth("left", stamp)  # published whatever the anchor was
        assert np.isfinite(depth).all() and abs_rel(depth, truth) < 0.05  # the last good fit
    rig.send_frame("left", stamps[5])  # no anchor at all
    rig.depth("left", stamps[5])
    rig.send_frame("left", stamps[6])  # its anchor comes after its depth went out: late
    depth = rig.depth("left", stamps[6])
    rig.publish("left", "metric_depth", anchor_image(truths[6], stamps[6], "32FC1"))
    # Still anchored with the last good fit.
    assert abs_rel(depth, truths[6]) < 0.05

    def counted(diag) -> bool:
        return diag.int("anchors_late") > int(start["anchors_late"])

    diag = rig.diagnostic("left", counted)
    delta = {key: diag.int(key) - int(start[key]) for key in counters}
    assert delta == {
        "anchor_frames_missing": 3,  # the malformed one's frame, the one without, the late one
        "anchor_frames_too_few_points": 2,  # NaN everywhere, 6.7e29 m
        "anchor_frames_wrong_size": 1,
        "anchor_frames_wrong_frame": 1,
        "anchors_late": 1,
        "anchors_rejected": 1,
    }, delta
    assert diag.level == 1  # WARN: the last frame was not anchored, an anchor was rejected
    assert "rejecting anchors" in diag.message and "rgb8" in diag.values["last_anchor_reject"]
    # Each kind is said in the log too (once per 5 s per kind), naming the camera's output.
    log = rig.node.log_text()
    for kind in ("wrong_frame", "wrong_size", "too_few_points"):
        line = f"anchoring '{NAMESPACE}/left/depth/image': not anchored ({kind})"
        assert line in log, (kind, log)
    assert f"anchoring '{NAMESPACE}/left/depth/image': rejected an anchor message: " in log
