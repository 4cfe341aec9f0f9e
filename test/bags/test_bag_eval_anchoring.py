"""moa-depth-bag eval --anchor-topic: the node's metric anchoring applied offline, counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import (
    GT,
    IMAGE,
    PERIOD,
    PRED,
    T0,
    depth_frames,
    eval_bag,
    run_eval,
    write_messages,
)

from moa_depth_ros.msgs.rosbags_messages import image_message

ANCHOR = "/camera/depth/registered"
MS = 1_000_000


def anchored_bag(
    path: Path,
    gt: list[np.ndarray],
    preds: list[np.ndarray],
    anchors: list[np.ndarray | None],
    anchor_delay_ms: list[int] | None = None,
) -> None:
    """Frame i at T0 + i·PERIOD: image and ground truth at the stamp, the prediction 30 ms
    later, the anchor (None: not recorded) ``anchor_delay_ms[i]`` later (default 60 ms)."""
    delays = anchor_delay_ms or [60] * len(gt)
    messages = []
    for i, (truth, pred, anchor) in enumerate(zip(gt, preds, anchors, strict=True)):
        stamp = T0 + i * PERIOD
        rgb = np.full((*truth.shape, 3), 128, dtype=np.uint8)
        messages += [
            (IMAGE, stamp, image_message(rgb, stamp, "cam")),
            (GT, stamp, image_message(truth, stamp, "cam")),
            (PRED, stamp + 30 * MS, image_message(pred, stamp, "cam")),
        ]
        if anchor is not None:
            messages.append((ANCHOR, stamp + delays[i] * MS, image_message(anchor, stamp, "cam")))
    messages.sort(key=lambda m: m[1])
    write_messages(path, messages)


def millimetres(depth: np.ndarray) -> np.ndarray:
    return np.rint(depth * 1000).astype(np.uint16)  # 16UC1, REP 118


def test_one_percent_of_the_ground_truth_fixes_a_mis_scaled_prediction(tmp_path: Path) -> None:
    # 80x60: 1 % is ~48 anchors per frame, well above the 20 a stable fit needs.
    gt = depth_frames(6, height=60, width=80)
    rng = np.random.default_rng(3)
    preds = [d * 1.7 * rng.normal(1.0, 0.03, d.shape).astype(np.float32) for d in gt]
    stamps = [T0 + i * PERIOD for i in range(6)]
    eval_bag(tmp_path / "bag", gt, stamps, preds, stamps)
    code, raw = run_eval(tmp_path / "bag", tmp_path / "raw")
    assert code == 0 and raw["overall"]["abs_rel"] == pytest.approx(0.7, abs=0.01)
    assert not any(k.startswith("anchor") for k in raw["counts"]) and "anchoring" not in raw
    assert not any(k.startswith("anchor_") for k in raw["settings"])

    extra = ["--anchor-topic", GT, "--anchor-fraction", "0.01", "--anchor-mode", "scale"]
    code, report = run_eval(tmp_path / "bag", tmp_path / "out", *extra)
    assert code == 0
    assert report["overall"]["abs_rel"] < 0.05
    counts = report["counts"]
    assert (counts["anchor_frames_anchored"], counts["evaluated"]) == (6, 6)
    unanchored = ("filled", "missing", "wrong_size", "too_few_points", "unstable", "out_of_bounds")
    assert [counts[f"anchor_frames_{k}"] for k in unanchored] == [0] * 6
    assert report["anchoring"]["mean_scale"] == pytest.approx(1 / 1.7, rel=0.02)
    assert report["anchoring"]["mean_shift"] == 0.0
    assert 30 <= report["anchoring"]["median_points"] <= 70
    assert all(20 <= row["anchor_points"] <= 80 for row in report["per_frame"])
    assert report["settings"]["anchor_fraction"] == 0.01
    assert report["settings"]["anchor_smoothing"] == 0.5
    assert report["settings"]["anchor_max_scale_change"] == 2.0  # the node's defaults
    assert report["settings"]["anchor_min_points"] == 20
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| anchor frames anchored | 6 |" in markdown and "## Anchoring" in markdown
    assert "- mean scale: 0.5" in markdown


def test_scale_shift_undoes_an_affine_error_that_scale_alone_cannot(tmp_path: Path) -> None:
    gt = depth_frames(4, height=60, width=80)
    preds = [(d - 0.4) / 1.3 for d in gt]  # truth = 1.3·pred + 0.4
    stamps = [T0 + i * PERIOD for i in range(4)]
    eval_bag(tmp_path / "bag", gt, stamps, preds, stamps)
    _, raw = run_eval(tmp_path / "bag", tmp_path / "raw")
    _, scale = run_eval(tmp_path / "bag", tmp_path / "scale", "--anchor-topic", GT)
    code, affine = run_eval(
        tmp_path / "bag", tmp_path / "affine", "--anchor-topic", GT, "--anchor-mode", "scale_shift"
    )
    assert code == 0
    # |truth - pred| / truth = 0.2308 + 0.3077 / truth; mean of 1/truth on U(0.5, 5) = ln 10 / 4.5
    assert raw["overall"]["abs_rel"] == pytest.approx(0.3 / 1.3 + 0.4 / 1.3 * np.log(10) / 4.5,
                                                      abs=0.01)  # fmt: skip
    assert scale["overall"]["abs_rel"] > 0.05
    assert affine["overall"]["abs_rel"] < 1e-4
    assert affine["anchoring"]["mean_scale"] == pytest.approx(1.3, abs=1e-3)
    assert affine["anchoring"]["mean_shift"] == pytest.approx(0.4, abs=1e-3)
    assert affine["anchoring"]["median_points"] == 80 * 60  # every pixel, no fraction


def test_missing_wrong_size_and_unusable_anchors_are_counted(tmp_path: Path) -> None:
    """Frame 0 has no anchor (scored as predicted: 2x too far), 1 and 4 anchor it, 2's anchor
    has another size and 3's is all zeros (16UC1 "no data"): both keep frame 1's fit."""
    gt = depth_frames(5)
    preds = [2.0 * d for d in gt]
    anchors = [None, millimetres(gt[1]), millimetres(gt[2][::2, ::2])]
    anchors += [np.zeros((12, 16), np.uint16), millimetres(gt[4])]
    anchored_bag(tmp_path / "bag", gt, preds, anchors)
    code, report = run_eval(tmp_path / "bag", tmp_path / "out", "--anchor-topic", ANCHOR)
    assert code == 0
    counts = {k.removeprefix("anchor_frames_"): v for k, v in report["counts"].items()}
    assert counts["evaluated"] == 5
    assert (counts["anchored"], counts["missing"]) == (2, 1)
    assert (counts["wrong_size"], counts["too_few_points"]) == (1, 1)
    assert counts["unstable"] == counts["out_of_bounds"] == 0
    rows = report["per_frame"]
    assert [r["anchor"] for r in rows] == [
        "missing", "anchored", "wrong_size", "too_few_points", "anchored"
    ]  # fmt: skip
    assert [r["anchor_points"] for r in rows] == [0, 192, 0, 0, 192]
    assert rows[0]["anchor_scale"] is None and rows[0]["abs_rel"] == pytest.approx(1.0)
    for row in rows[1:]:  # millimetre anchors: the fit is 0.5 to the rounding
        assert row["anchor_scale"] == pytest.approx(0.5, abs=1e-3)
        assert row["abs_rel"] < 2e-3
    assert report["overall"]["abs_rel"] == pytest.approx(0.2, abs=1e-3)
    assert report["anchoring"]["median_points"] == 192  # of 192, 0, 192: unstable fits count


def test_frames_are_anchored_in_stamp_order_even_when_an_anchor_comes_late(
    tmp_path: Path,
) -> None:
    """Frame 0's anchor is recorded after frames 1 and 2: the smoothed fit still folds frame
    0 (scale 2) before frame 1 (scale 3), as the node would: 0.5·2 + 0.5·3 = 2.5."""
    gt = [d / 2 for d in depth_frames(3)]  # <= 2.5 m: 3x that stays inside the 10 m range
    anchors = [2.0 * gt[0], 3.0 * gt[1], None]
    anchored_bag(tmp_path / "bag", gt, gt, anchors, anchor_delay_ms=[250, 60, 60])
    code, report = run_eval(tmp_path / "bag", tmp_path / "out", "--anchor-topic", ANCHOR)
    assert code == 0
    rows = report["per_frame"]
    assert [r["anchor_scale"] for r in rows] == pytest.approx([2.0, 2.5, 2.5])
    assert [r["abs_rel"] for r in rows] == pytest.approx([1.0, 1.5, 1.5], abs=1e-5)
    assert report["anchoring"]["mean_scale"] == pytest.approx(2.5)


def test_hole_fill_without_a_fit_passes_the_anchor_through(tmp_path: Path) -> None:
    gt = depth_frames(2)
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, [2.0 * d for d in gt], stamps)
    extra = ["--anchor-topic", GT, "--anchor-mode", "none", "--anchor-fill", "holes"]
    code, report = run_eval(tmp_path / "bag", tmp_path / "out", *extra)
    assert code == 0
    assert report["overall"]["abs_rel"] == 0.0  # every pixel replaced by the ground truth
    # Counted as what happened: filled, not anchored (nothing was fitted).
    counts = report["counts"]
    assert (counts["anchor_frames_filled"], counts["anchor_frames_anchored"]) == (2, 0)
    assert [r["anchor_points"] for r in report["per_frame"]] == [12 * 16] * 2
    assert report["anchoring"]["mean_scale"] is None  # no fit in mode none


def test_anchor_mistakes_are_one_line_errors(tmp_path: Path, capsys) -> None:
    eval_bag(tmp_path / "bag", [np.full((6, 8), 2.0, np.float32)], [T0],
             [np.full((6, 8), 2.0, np.float32)], [T0])  # fmt: skip
    cases = [
        (["--anchor-topic", "/lidar"], "topic '/lidar' is not in bag"),
        (["--anchor-topic", GT, "--anchor-mode", "magic"], "anchor mode must be one of ('none', "),
        (["--anchor-topic", GT, "--anchor-fill", "all"], "anchor fill must be one of"),
        (["--anchor-topic", GT, "--anchor-fraction", "0"], "anchor fraction must be in (0, 1]"),
        (["--anchor-topic", GT, "--anchor-fraction", "1.5"], "anchor fraction must be in (0, 1]"),
        (
            ["--anchor-topic", GT, "--anchor-smoothing", "1"],
            "anchor smoothing must be in [0, 0.99]",
        ),
        (["--anchor-topic", GT, "--anchor-mode", "none"], "would use no anchor: choose a mode"),
        (
            ["--anchor-topic", GT, "--anchor-min-points", "1"],
            "anchor min points must be in [2, 1e+07]",
        ),
        (["--anchor-topic", GT, "--anchor-max-residual", "nan"], "anchor max residual must be"),
        (["--anchor-topic", GT, "--anchor-max-residual", "1e30"], "anchor max residual must be"),
        (["--anchor-topic", GT, "--anchor-max-scale-factor", "nan"], "max scale factor must be"),
        (["--anchor-topic", GT, "--anchor-max-scale-change", "0.5"], "max scale change must be"),
        (["--anchor-max-scale-change", "3"], "anchor_max_scale_change set without an anchor"),
        (["--anchor-topic", PRED], "anchor topic '/depth/image' is also an input topic"),
        (["--anchor-fraction", "0.01"], "anchor_fraction set without an anchor topic"),
    ]
    for extra, reason in cases:
        code, report = run_eval(tmp_path / "bag", tmp_path / "out", *extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and reason in err and len(err.splitlines()) == 1, err
        assert report == {}
    code, _ = run_eval(tmp_path / "bag", tmp_path / "out", "--anchor-topic", "/lidar")
    assert f"{GT} (sensor_msgs/msg/Image)" in capsys.readouterr().err  # topics present listed
