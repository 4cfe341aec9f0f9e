"""One anchoring implementation: the same frames and anchors through the node's path
(``node.anchors.CameraAnchoring``, rclpy messages, no ROS graph) and bag evaluation's
(``evaluate_bag`` on a bag holding them) give bit-identical depth and the same outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import GT, IMAGE, PERIOD, PRED, T0, write_messages
from std_msgs.msg import Header

from moa_depth_ros.bags.evaluate import EvalSettings, evaluate_bag
from moa_depth_ros.msgs.image_codec import array_to_image_msg
from moa_depth_ros.msgs.rosbags_messages import image_message
from moa_depth_ros.node.anchors import CameraAnchoring
from moa_depth_ros.node.params import PARAMETERS, NodeSettings

ANCHOR = "/camera/depth/registered"
H, W = 30, 40
RANGE = (0.1, 20.0)


def frames(count: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """(truth, the node's depth, anchors): a model 1.7x too far (clipped to the range, as the
    estimator clips), and anchors of every kind: good ones, noisy, millimetres, none, another
    size, 1e30, float32's limit, 3x too far, all holes, an affine sensor."""
    rng = np.random.default_rng(5)
    truth = [rng.uniform(0.5, 8.0, (H, W)).astype(np.float32) for _ in range(count)]
    preds = [np.clip(t * np.float32(1.7), *RANGE).astype(np.float32) for t in truth]

    def sparse(t: np.ndarray, keep: float = 0.3) -> np.ndarray:
        return np.where(rng.random(t.shape) < keep, t, np.float32(0)).astype(np.float32)

    kinds = [
        lambda t: sparse(t),
        lambda t: sparse(t * rng.normal(1, 0.02, t.shape).astype(np.float32)),
        None,
        lambda t: np.rint(sparse(t) * 1000).astype(np.uint16),  # 16UC1 mm
        lambda t: sparse(t)[: H // 2],  # another size
        lambda t: sparse(t) * np.float32(1e30),
        lambda t: sparse(t) * np.float32(4e37),
        lambda t: sparse(t) * np.float32(3),  # a fine fit, 3x the smoothed one
        lambda t: np.zeros_like(t),  # all holes
        lambda t: sparse(t * np.float32(1.1) + np.float32(0.3)),
        lambda t: sparse(t, 0.01),  # about 12 anchors: too few
        lambda t: sparse(t),
    ]
    anchors = [None if kind is None else kind(t) for kind, t in zip(kinds, truth, strict=False)]
    return truth, preds, anchors


def node_depth(
    preds: list[np.ndarray], anchors: list[np.ndarray | None], stamps: list[int], **params
) -> tuple[list[np.ndarray], dict[str, int]]:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(min_depth=RANGE[0], max_depth=RANGE[1], **params)
    settings = NodeSettings.from_values(values)
    anchoring = CameraAnchoring(settings)
    try:
        out = []
        for pred, anchor, stamp in zip(preds, anchors, stamps, strict=True):
            if anchor is not None:
                header = Header(frame_id="cam")
                header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
                encoding = "16UC1" if anchor.dtype == np.uint16 else "32FC1"
                # The bag's bytes, in an rclpy message.
                anchoring.receive_depth(array_to_image_msg(anchor, header, encoding))
                assert anchoring.drain()
            out.append(anchoring.anchor(pred, "cam", stamp, None, settings))
        return out, anchoring.snapshot().outcomes
    finally:
        anchoring.close()


def bag_depth(
    path: Path,
    truth: list[np.ndarray],
    preds: list[np.ndarray],
    anchors: list[np.ndarray | None],
    stamps: list[int],
    **options,
) -> tuple[list[np.ndarray], dict[str, int]]:
    messages = []
    for t, pred, anchor, stamp in zip(truth, preds, anchors, stamps, strict=True):
        rgb = np.full((H, W, 3), 128, np.uint8)
        messages += [
            (IMAGE, stamp, image_message(rgb, stamp, "cam")),
            (GT, stamp, image_message(t, stamp, "cam")),
            (PRED, stamp + 30_000_000, image_message(pred, stamp, "cam")),
        ]
        if anchor is not None:
            messages.append((ANCHOR, stamp + 60_000_000, image_message(anchor, stamp, "cam")))
    write_messages(path, sorted(messages, key=lambda m: m[1]))
    settings = EvalSettings(
        image_topic=IMAGE, gt_topic=GT, pred_topic=PRED, anchor_topic=ANCHOR, samples=0,
        min_depth=RANGE[0], max_depth=RANGE[1], **options,
    )  # fmt: skip
    scored: dict[int, np.ndarray] = {}
    result = evaluate_bag(path, settings, progress=False, on_prediction=scored.__setitem__)
    counts = {
        key.removeprefix("anchor_frames_"): value
        for key, value in result.report.counts.items()
        if key.startswith("anchor_frames_") and value
    }
    return [scored[stamp] for stamp in stamps], counts


@pytest.mark.parametrize(
    ("mode", "fill", "smoothing"), [("scale", "none", 0.5), ("scale_shift", "holes", 0.3)]
)
def test_node_and_bag_eval_publish_bit_identical_depth(
    tmp_path: Path, mode: str, fill: str, smoothing: float
) -> None:
    truth, preds, anchors = frames(12)
    stamps = [T0 + i * PERIOD for i in range(len(truth))]
    node, node_outcomes = node_depth(
        preds, anchors, stamps, anchor_mode=mode, anchor_fill=fill, anchor_smoothing=smoothing
    )
    bag, bag_outcomes = bag_depth(
        tmp_path / "bag", truth, preds, anchors, stamps,
        anchor_mode=mode, anchor_fill=fill, anchor_smoothing=smoothing,
    )  # fmt: skip
    for index, (a, b) in enumerate(zip(node, bag, strict=True)):
        assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes(), index
        assert np.isfinite(a).all(), index  # no anchor ever NaNs the output
    assert node_outcomes == bag_outcomes
    assert bag_outcomes == {
        "anchored": 5,  # good, noisy, millimetres, affine, good
        "missing": 1,
        "wrong_size": 1,
        "too_few_points": 4,  # 1e30 and 4e37 (beyond the range: no data), all holes, 12 px
        "out_of_bounds": 1,  # 3x the smoothed scale
    }
    # And anchoring did its job: the mis-scaled model's error is gone.
    before = np.mean([np.mean(np.abs(p - t) / t) for p, t in zip(preds, truth, strict=True)])
    after = np.mean([np.mean(np.abs(d - t) / t) for d, t in zip(node[1:], truth[1:], strict=True)])
    assert before > 0.6 and after < 0.1
