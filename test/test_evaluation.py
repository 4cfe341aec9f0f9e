"""The one evaluation core: protocols, per-frame scoring, and the same report from either path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers.bags import SECOND, T0, write_messages
from conftest import TINY_MOA

from moa_depth_ros.cli.bag import main as bag_main
from moa_depth_ros.evaluation.scoring import PROTOCOLS, Evaluation, get_protocol, score_frame
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import save_checkpoint
from moa_depth_ros.msgs.rosbags_messages import image_message
from moa_depth_train.cli.evaluate import main as evaluate_main


def test_clamping_protocols_score_broken_pixels_and_rejecting_ones_drop_them() -> None:
    gt = np.full((4, 4), 2.0, np.float32)
    pred = gt.copy()
    pred[0, 0] = np.nan
    pred[0, 1] = -1.0
    clamped = score_frame(pred, gt, get_protocol("none")).metrics
    # BTS: NaN → min_depth (1e-3), negative → clamped to min_depth; both count.
    assert clamped["valid_pixels"] == 16
    assert clamped["abs_rel"] == pytest.approx(2 * (2 - 1e-3) / 2 / 16, rel=1e-6)
    assert clamped["pred_usable"] == pytest.approx(14 / 16)
    rejected = score_frame(pred, gt, get_protocol("depthclip")).metrics
    assert rejected["valid_pixels"] == 14 and rejected["abs_rel"] == 0.0
    assert rejected["pred_usable"] == 1.0


def test_protocol_crops_apply_to_nyu_frames_only() -> None:
    eigen = get_protocol("eigen")
    assert eigen.crop_for((480, 640)) == (45, 471, 41, 601)
    assert eigen.crop_for((240, 320)) is None
    gt = np.full((480, 640), 3.0, np.float32)
    pred = gt.copy()
    pred[:45] = 9.0  # outside the Eigen crop
    assert score_frame(pred, gt, eigen).metrics["abs_rel"] == 0.0
    assert score_frame(pred, gt, get_protocol("none")).metrics["abs_rel"] > 0
    with pytest.raises(
        ValueError, match="protocol must be one of eigen, depthclip, none, kitti_eigen"
    ):
        get_protocol("kitti-ish")


def test_resizing_keeps_the_aspect_or_refuses() -> None:
    gt = np.full((60, 80), 2.0, np.float32)
    half = np.full((30, 40), 2.2, np.float32)
    score = score_frame(half, gt, get_protocol("none"))
    assert score.pred.shape == gt.shape and score.metrics["abs_rel"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="different aspect ratios"):
        score_frame(np.full((1, 1), 2.0, np.float32), gt, get_protocol("none"))
    forced = score_frame(
        np.full((1, 1), 2.0, np.float32), gt, PROTOCOLS["none"], allow_aspect_change=True
    )
    assert forced.metrics["abs_rel"] == 0.0


def test_evaluation_numbers_frames_in_order_and_keeps_samples() -> None:
    evaluation = Evaluation(get_protocol("none"), baseline_depth=2.0)
    gt = np.full((8, 8), 2.0, np.float32)
    evaluation.add(gt * 1.5, gt, {"name": "b"}, order=2)
    evaluation.add(gt, gt, {"name": "a"}, order=1, sample_label="a")
    evaluation.add(np.zeros_like(gt), np.zeros_like(gt), {"name": "empty"}, order=3)
    report, samples, masks = evaluation.report("x", {"n": 3}, {}, "t")
    assert [row["name"] for row in report.per_frame] == ["a", "b"]
    assert [row["frame"] for row in report.per_frame] == [0, 1]
    assert report.rows["prediction"]["abs_rel"] == pytest.approx(0.25)
    assert report.rows["prediction"]["skipped"] == 1
    assert report.rows["constant 2 m baseline"]["abs_rel"] == 0.0
    assert [s.label for s in samples] == ["a"] and masks[0].all()


@pytest.mark.parametrize(
    ("protocol", "size"), [("none", (48, 64)), ("depthclip", (480, 640)), ("eigen", (480, 640))]
)
def test_bag_and_dataset_evaluation_give_the_same_report(
    tmp_path: Path, protocol: str, size: tuple[int, int]
) -> None:
    """Frames as a bag (rgb8 + 16UC1 ground truth) and as a dataset (PNG + uint16 PNG):
    moa-depth-bag eval and moa-depth-evaluate give the same numbers and the same files, under
    every protocol (depthclip runs the model on its input crop pasted into a zero canvas)."""
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(3):
        rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        depth_mm = rng.integers(500, 6000, size).astype(np.uint16)
        depth_mm[:4] = 0  # invalid ground truth
        frames.append((rgb, depth_mm))
    checkpoint = save_checkpoint(build_model(TINY_MOA), tmp_path / "tiny.safetensors")

    messages = []
    for index, (rgb, depth_mm) in enumerate(frames):
        stamp = T0 + index * SECOND // 10
        messages.append(("/camera/image_raw", stamp, image_message(rgb, stamp, "cam")))
        messages.append(("/camera/depth", stamp, image_message(depth_mm, stamp, "cam")))
    write_messages(tmp_path / "bag", messages)
    data = tmp_path / "data"
    lines = []
    for index, (rgb, depth_mm) in enumerate(frames):
        (data / "scene").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / "scene" / f"rgb_{index:05d}.png"), rgb[..., ::-1])
        cv2.imwrite(str(data / "scene" / f"sync_depth_{index:05d}.png"), depth_mm)
        lines.append(f"scene/rgb_{index:05d}.png scene/sync_depth_{index:05d}.png 518.8579\n")
    (data / "test_files.txt").write_text("".join(lines))

    common = ["--checkpoint", str(checkpoint), "--protocol", protocol, "--device", "cpu"]
    bag_out, data_out = tmp_path / "bag_eval", tmp_path / "data_eval"
    assert bag_main(["eval", str(tmp_path / "bag"), "--image-topic", "/camera/image_raw",
                     "--gt-topic", "/camera/depth", *common, "--out", str(bag_out),
                     "--no-progress"]) == 0  # fmt: skip
    assert evaluate_main(["--data", str(data / "test_files.txt"), *common, "--out",
                          str(data_out), "--no-progress"]) == 0  # fmt: skip

    from_bag = json.loads((bag_out / "report.json").read_text())
    from_data = json.loads((data_out / "report.json").read_text())
    assert from_bag["overall"] == from_data["overall"]
    assert from_bag["overall"]["count"] == 3
    metric_keys = [*from_bag["overall"].keys() - {"count", "skipped"}, "frame"]
    for bag_row, data_row in zip(from_bag["per_frame"], from_data["per_frame"], strict=True):
        assert {k: bag_row[k] for k in metric_keys} == {k: data_row[k] for k in metric_keys}
    assert from_bag["settings"]["protocol"] == from_data["settings"]["protocol"]
    names = {"report.json", "report.md", "per_frame_metrics.png", "samples.png"}
    assert {p.name for p in bag_out.iterdir()} == {p.name for p in data_out.iterdir()} == names


def _hand_abs_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """mean(|d - g| / g) over ``mask``, the published formula, written out here."""
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


def _nyu_fixture() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    gt = rng.uniform(0.5, 9.5, (480, 640)).astype(np.float32)
    gt[100:120, 200:260] = 0.0  # no ground truth
    gt[300:310, 300:310] = 12.0  # beyond the 10 m cap
    pred = (gt * rng.uniform(0.8, 1.2, gt.shape)).astype(np.float32)
    pred[0:30, :] = 50.0  # outside every NYU crop, far off
    pred[200, 200:210] = np.nan  # broken pixels inside the crops
    pred[201, 200:210] = -1.0
    pred[202, 200:210] = 20.0  # above the cap: clamped to 10
    return pred, gt


def test_eigen_preset_by_hand() -> None:
    pred, gt = _nyu_fixture()
    by_hand = np.nan_to_num(pred, nan=1e-3).clip(1e-3, 10.0)  # BTS: NaN → min, then clamp
    mask = (gt > 1e-3) & (gt < 10.0)
    crop = np.zeros_like(mask)
    crop[45:471, 41:601] = True
    expected = _hand_abs_rel(by_hand, gt, mask & crop)
    assert score_frame(pred, gt, get_protocol("eigen")).metrics["abs_rel"] == pytest.approx(
        expected, rel=1e-6
    )


def test_depthclip_preset_by_hand() -> None:
    pred, gt = _nyu_fixture()
    with np.errstate(invalid="ignore"):
        mask = (gt > 1e-3) & (gt < 10.0) & (pred > 1e-3)  # NaN and negatives drop out
    crop = np.zeros_like(mask)
    crop[45:471, 46:601] = True
    expected = _hand_abs_rel(np.clip(pred, 1e-3, 10.0), gt, mask & crop)
    protocol = get_protocol("depthclip")
    assert score_frame(pred, gt, protocol).metrics["abs_rel"] == pytest.approx(expected, rel=1e-6)
    # The model sees the x 60:604, y 56:472 crop; its output is pasted into a zero canvas.
    seen = []
    rgb = np.zeros((480, 640, 3), np.uint8)
    canvas = protocol.predict(
        lambda image: seen.append(image.shape) or np.ones(image.shape[:2]), rgb
    )
    assert seen == [(416, 544, 3)]
    assert canvas[56:472, 60:604].min() == 1.0 and canvas.sum() == 416 * 544
    assert (
        get_protocol("eigen").predict(lambda image: np.ones(image.shape[:2]), rgb).sum()
        == 480 * 640
    )


def test_none_preset_by_hand() -> None:
    pred, gt = _nyu_fixture()
    by_hand = np.nan_to_num(pred, nan=1e-3).clip(1e-3, 10.0)
    mask = (gt > 1e-3) & (gt < 10.0)
    expected = _hand_abs_rel(by_hand, gt, mask)
    assert score_frame(pred, gt, get_protocol("none")).metrics["abs_rel"] == pytest.approx(
        expected, rel=1e-6
    )


@pytest.mark.parametrize(
    ("name", "rows", "cols"),
    [("kitti_eigen", (0.3324324, 0.91351351), (0.0359477, 0.96405229)),
     ("kitti_garg", (0.40810811, 0.99189189), (0.03594771, 0.96405229))],
)  # fmt: skip
def test_kitti_presets_by_hand(name, rows, cols) -> None:
    rng = np.random.default_rng(6)
    gt = np.where(rng.random((375, 1242)) < 0.2, rng.uniform(2, 95, (375, 1242)), 0.0)
    gt = gt.astype(np.float32)  # sparse LiDAR ground truth, some beyond 80 m
    pred = (gt + rng.uniform(-3, 3, gt.shape)).astype(np.float32)
    top, bottom = int(rows[0] * 375), int(rows[1] * 375)
    left, right = int(cols[0] * 1242), int(cols[1] * 1242)
    mask = (gt > 1e-3) & (gt < 80.0)
    crop = np.zeros_like(mask)
    crop[top:bottom, left:right] = True
    expected = _hand_abs_rel(np.clip(pred, 1e-3, 80.0), gt, mask & crop)
    metrics = score_frame(pred, gt, get_protocol(name)).metrics
    assert metrics["abs_rel"] == pytest.approx(expected, rel=1e-6)
    assert metrics["valid_pixels"] == int((mask & crop).sum())


def test_relative_predictions_are_aligned_in_inverse_depth_before_the_clamp() -> None:
    """Relative values (here 11-78) are no metres: the BTS clamp to 1e-3-10 m applies to the
    aligned depth, never to them. A NaN pixel is clamped after the alignment and costs."""
    gt = np.random.default_rng(4).uniform(0.5, 3.0, (4, 4)).astype(np.float32)
    pred = (37.0 / gt + 4.0).astype(np.float32)
    pred[0, 0] = np.nan
    metrics = score_frame(pred, gt, get_protocol("none"), "scale_shift_inverse",
                          kind="relative").metrics  # fmt: skip
    expected = (gt[0, 0] - 1e-3) / gt[0, 0] / 16  # NaN → min depth, the rest exact
    assert metrics["abs_rel"] == pytest.approx(expected, rel=1e-4)
    assert metrics["pred_usable"] == 15 / 16 and metrics["valid_pixels"] == 16
    # Clamped first (the old order), every relative value would have become 10 m.
    clamped = score_frame(np.clip(pred, 1e-3, 10.0), gt, get_protocol("none"),
                          "scale_shift_inverse", kind="relative").metrics  # fmt: skip
    assert clamped["abs_rel"] > 0.3


def test_relative_values_not_above_zero_are_no_prediction() -> None:
    """As anchoring reads them: a zero canvas around DepthCLIP's input crop, or a bicubic
    undershoot below 0, takes no part in the fit and is not a usable pixel."""
    gt = np.random.default_rng(5).uniform(0.5, 3.0, (480, 640)).astype(np.float32)
    pred = (37.0 / gt + 4.0).astype(np.float32)
    pred[:56] = 0.0  # the zero canvas above the input crop
    pred[200, :10] = -0.5
    protocol = get_protocol("depthclip")  # rejects unusable pixels
    score = score_frame(pred, gt, protocol, "scale_shift_inverse", kind="relative")
    assert score.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    crop = np.zeros(gt.shape, bool)
    crop[56:471, 46:601] = True  # the depthclip crop below the canvas
    crop[200, :10] = False
    assert score.metrics["valid_pixels"] == int(crop.sum())


def test_metric_predictions_align_in_inverse_depth_too() -> None:
    """``scale_shift_inverse`` on metres inverts them first: a metric model whose inverse
    depth is affine in the truth's scores 0, and its NaN pixel (clamped to min depth after
    the alignment) does not enter the fit as 1/min_depth."""
    gt = np.random.default_rng(6).uniform(0.5, 3.0, (4, 4)).astype(np.float32)
    pred = (1.0 / (0.5 / gt + 0.2)).astype(np.float32)
    pred[3, 3] = np.nan
    metrics = score_frame(pred, gt, get_protocol("none"), "scale_shift_inverse").metrics
    assert metrics["abs_rel"] == pytest.approx((gt[3, 3] - 1e-3) / gt[3, 3] / 16, rel=1e-4)


def test_a_relative_prediction_needs_the_inverse_alignment() -> None:
    gt = np.full((4, 4), 2.0, np.float32)
    for align in ("none", "median", "scale_shift"):
        with pytest.raises(ValueError, match=f"scored aligned with scale_shift_inverse .*{align}"):
            score_frame(gt, gt, get_protocol("none"), align, kind="relative")
        with pytest.raises(ValueError, match="a relative prediction is inverse depth"):
            Evaluation(get_protocol("none"), align, kind="relative")
    with pytest.raises(ValueError, match="prediction kind must be one of"):
        score_frame(gt, gt, get_protocol("none"), kind="disparity")
    # The baseline (a constant, metric) is aligned like the model: the best constant.
    evaluation = Evaluation(get_protocol("none"), "scale_shift_inverse", baseline_depth=5.0,
                            kind="relative")  # fmt: skip
    evaluation.add(37.0 / gt + 4.0, gt, {})
    report, _, _ = evaluation.report("x", {}, {}, "t")
    assert report.rows["constant 5 m baseline"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert report.rows["prediction"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_dataset_evaluation_aligns_a_relative_model_and_refuses_a_prompt_model(
    tmp_path: Path, capsys
) -> None:
    """moa-depth-evaluate of foundation models: the same frames as a bag give the same
    numbers (a relative model aligned in inverse depth by both), a prompt model is refused."""
    from model_helpers.hf_models import hf_checkpoint

    rng = np.random.default_rng(4)
    data, messages, lines = tmp_path / "data", [], []
    (data / "scene").mkdir(parents=True)
    for index in range(2):
        rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        depth_mm = rng.integers(500, 6000, (48, 64)).astype(np.uint16)
        stamp = T0 + index * SECOND // 10
        messages += [("/camera/image_raw", stamp, image_message(rgb, stamp, "cam")),
                     ("/camera/depth", stamp, image_message(depth_mm, stamp, "cam"))]  # fmt: skip
        cv2.imwrite(str(data / "scene" / f"rgb_{index:05d}.png"), rgb[..., ::-1])
        cv2.imwrite(str(data / "scene" / f"sync_depth_{index:05d}.png"), depth_mm)
        lines.append(f"scene/rgb_{index:05d}.png scene/sync_depth_{index:05d}.png 518.8579\n")
    (data / "test_files.txt").write_text("".join(lines))
    write_messages(tmp_path / "bag", messages)
    relative = hf_checkpoint("depth_anything_relative", tmp_path)
    common = ["--checkpoint", str(relative), "--protocol", "none", "--device", "cpu"]
    assert evaluate_main(["--data", str(data / "test_files.txt"), *common, "--out",
                          str(tmp_path / "d"), "--no-progress"]) == 0  # fmt: skip
    assert bag_main(["eval", str(tmp_path / "bag"), "--image-topic", "/camera/image_raw",
                     "--gt-topic", "/camera/depth", *common, "--out", str(tmp_path / "b"),
                     "--no-progress"]) == 0  # fmt: skip
    from_data = json.loads((tmp_path / "d" / "report.json").read_text())
    from_bag = json.loads((tmp_path / "b" / "report.json").read_text())
    assert from_data["settings"]["align"] == "scale_shift_inverse (relative model)"
    assert from_data["overall"] == from_bag["overall"] and from_data["overall"]["count"] == 2
    capsys.readouterr()
    assert evaluate_main(["--data", str(data / "test_files.txt"), *common, "--align", "median",
                          "--out", str(tmp_path / "m"), "--no-progress"]) == 2  # fmt: skip
    assert "relative" in capsys.readouterr().err
    prompt = hf_checkpoint("prompt_depth_anything", tmp_path)
    capsys.readouterr()  # transformers' own progress while saving the model directory
    assert evaluate_main(["--data", str(data / "test_files.txt"), "--checkpoint", str(prompt),
                          "--device", "cpu", "--out", str(tmp_path / "p"),
                          "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "moa-depth-bag eval --anchor-topic" in err
    assert not (tmp_path / "p" / "report.json").exists()
