"""moa-depth-bag eval: pairing, alignment, baselines, checkpoints, errors, no ROS needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import (
    GT,
    IMAGE,
    PERIOD,
    PRED,
    REPO,
    T0,
    depth_frames,
    eval_bag,
    mixed_messages,
    run_eval,
    write_messages,
)

from moa_depth_ros.cli.bag import main
from moa_depth_ros.msgs.rosbags_messages import image_message


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_eval_prediction_ten_percent_too_far(tmp_path: Path, storage: str) -> None:
    gt = depth_frames(4)
    stamps = [T0 + i * PERIOD for i in range(4)]
    eval_bag(tmp_path / "bag", gt, stamps, [1.1 * d for d in gt], stamps, storage=storage)
    code, report = run_eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    overall = report["overall"]
    assert overall["abs_rel"] == pytest.approx(0.1, abs=1e-5)
    assert overall["delta1"] == 1.0
    assert overall["count"] == 4
    assert report["counts"]["matched"] == 4
    assert [row["gt_stamp_ns"] for row in report["per_frame"]] == stamps
    for name in ("report.md", "per_frame_metrics.png", "samples.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "![samples](samples.png)" in markdown and "| prediction | 0.100 |" in markdown


def test_eval_reads_16uc1_predictions_and_resizes_them(tmp_path: Path) -> None:
    # Piecewise-constant ground truth at 2x the prediction size: nearest resize is exact.
    small = [np.full((6, 8), 1.5, np.float32), np.full((6, 8), 3.25, np.float32)]
    gt = [np.kron(d, np.ones((2, 2), np.float32)) for d in small]
    preds = [np.rint(d * 1000).astype(np.uint16) for d in small]  # millimetres, REP 118
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, preds, stamps)
    code, report = run_eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    assert report["overall"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_eval_pairs_by_header_stamp_with_jitter_and_drops(tmp_path: Path) -> None:
    gt = depth_frames(10)
    gt_stamps = [T0 + i * PERIOD for i in range(10)]
    jitter = [3, -4, 2, 0, -1, 4, -3, 1, 2, -2]  # ms, inside the 5 ms slop
    kept = [0, 1, 2, 4, 5, 7, 8, 9]  # frames 3 and 6 dropped by the "node"
    pred_stamps = [gt_stamps[i] + jitter[i] * 1_000_000 for i in kept]
    pred_stamps.append(T0 + 20 * PERIOD)  # a prediction with no ground truth
    preds = [gt[i] * 1.1 for i in kept] + [gt[0]]
    # Predictions arrive 150 ms late in bag time: pairing by receive time would be off by one.
    eval_bag(tmp_path / "bag", gt, gt_stamps, preds, pred_stamps, pred_delay_ns=150_000_000)
    code, report = run_eval(tmp_path / "bag", tmp_path / "out", "--slop", "0.005")
    assert code == 0
    assert report["counts"] == {
        "predictions": 9,
        "ground_truth": 10,
        "matched": 8,
        "unmatched_predictions": 1,
        "unmatched_ground_truth": 2,
        "without_valid_pixels": 0,
        "undecodable": 0,
        "evaluated": 8,
    }
    assert report["overall"]["abs_rel"] == pytest.approx(0.1, abs=1e-5)
    assert [row["gt_stamp_ns"] for row in report["per_frame"]] == [gt_stamps[i] for i in kept]


def test_eval_counts_frames_without_valid_pixels(tmp_path: Path) -> None:
    gt = depth_frames(2)
    gt[1][:] = np.nan
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, gt, stamps)
    code, report = run_eval(tmp_path / "bag", tmp_path / "out")
    assert code == 0
    assert report["counts"]["without_valid_pixels"] == 1
    assert report["counts"]["evaluated"] == 1


def test_eval_median_alignment_undoes_a_global_scale(tmp_path: Path) -> None:
    gt = depth_frames(3)
    stamps = [T0 + i * PERIOD for i in range(3)]
    eval_bag(tmp_path / "bag", gt, stamps, [0.5 * d for d in gt], stamps)
    _, raw = run_eval(tmp_path / "bag", tmp_path / "raw")
    _, aligned = run_eval(tmp_path / "bag", tmp_path / "aligned", "--align", "median")
    assert raw["overall"]["abs_rel"] == pytest.approx(0.5, abs=1e-5)
    assert aligned["overall"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert aligned["overall"]["delta1"] == 1.0
    assert aligned["settings"]["align"] == "median"


def test_eval_baseline_row(tmp_path: Path) -> None:
    gt = [np.full((4, 4), 2.0, np.float32)]
    eval_bag(tmp_path / "bag", gt, [T0], gt, [T0])
    _, report = run_eval(tmp_path / "bag", tmp_path / "out", "--baseline-depth", "2.5")
    assert report["references"]["constant 2.5 m baseline"]["abs_rel"] == pytest.approx(0.25)


def test_eval_runs_a_checkpoint_on_the_images(tmp_path: Path, tiny_moa_config: dict) -> None:
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(build_model(tiny_moa_config), tmp_path / "tiny.safetensors")
    gt = depth_frames(2, height=24, width=32)
    stamps = [T0, T0 + PERIOD]
    eval_bag(tmp_path / "bag", gt, stamps, [], [])
    argv = ["eval", str(tmp_path / "bag"), "--image-topic", IMAGE, "--gt-topic", GT]
    argv += ["--checkpoint", str(checkpoint), "--device", "cpu", "--samples", "1"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["matched"] == 2 and report["counts"]["evaluated"] == 2
    assert np.isfinite(report["overall"]["abs_rel"])


def test_missing_topic_lists_the_topics_present(tmp_path: Path, capsys) -> None:
    write_messages(tmp_path / "bag", mixed_messages(2))
    code, _ = run_eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("moa-depth-bag: error: topic '/camera/depth/ground_truth' is not in")
    assert "/camera/camera_info (sensor_msgs/msg/CameraInfo)" in err
    assert "/camera/image_raw (sensor_msgs/msg/Image)" in err
    assert "\n" not in err


def test_wrong_depth_encoding_is_an_error(tmp_path: Path, capsys) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    messages = [(t, T0, image_message(rgb, T0, "cam")) for t in (IMAGE, GT, PRED)]
    write_messages(tmp_path / "bag", messages)
    code, _ = run_eval(tmp_path / "bag", tmp_path / "out")
    assert code == 2
    assert "has encoding 'rgb8'; depth must be one of 16UC1, 32FC1" in capsys.readouterr().err


def test_eval_works_without_ros(tmp_path: Path) -> None:
    gt = depth_frames(1)
    eval_bag(tmp_path / "bag", gt, [T0], gt, [T0])
    script = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces'):\n"
        "    sys.modules[name] = None\n"
        "from moa_depth_ros.cli.bag import main\n"
        f"sys.exit(main(['eval', r'{tmp_path / 'bag'}', '--image-topic', '{IMAGE}', '--gt-topic',\n"
        f"              '{GT}', '--pred-topic', '{PRED}', '--out', r'{tmp_path / 'out'}']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_predictions_of_another_aspect_need_an_explicit_option(tmp_path: Path, capsys) -> None:
    gt = [np.full((6, 8), 2.0, np.float32)]
    eval_bag(tmp_path / "bag", gt, [T0], [np.full((1, 1), 2.0, np.float32)], [T0])
    code, _ = run_eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "different aspect ratios" in err and len(err.splitlines()) == 1
    code, report = run_eval(tmp_path / "bag", tmp_path / "out2", "--allow-aspect-change")
    assert code == 0 and report["overall"]["abs_rel"] == 0.0


@pytest.mark.parametrize("value", [np.nan, -1.0, 0.0])
def test_all_unusable_predictions_are_an_error_not_a_score(tmp_path: Path, capsys, value) -> None:
    """NaN and non-positive predictions are handled alike: clamped and scored (BTS), and an
    evaluation where not one predicted pixel was usable exits 1."""
    gt = [np.full((6, 8), 2.0, np.float32)] * 2
    preds = [np.full((6, 8), value, np.float32)] * 2
    eval_bag(tmp_path / "bag", gt, [T0, T0 + PERIOD], preds, [T0, T0 + PERIOD])
    code, report = run_eval(tmp_path / "bag", tmp_path / "out")
    assert code == 1 and "no usable prediction" in capsys.readouterr().err
    assert report["overall"]["pred_usable"] == 0.0
    assert report["overall"]["abs_rel"] == pytest.approx((2 - 1e-3) / 2)  # scored as min depth


def test_argument_ranges_are_checked(tmp_path: Path, capsys) -> None:
    """Each refused value is one line naming the option, exit 2, nothing written; finite is not
    sane (a slop of hours pairs unrelated frames, a 1e30 m baseline scores nothing real)."""
    eval_bag(tmp_path / "bag", [np.full((6, 8), 2.0, np.float32)], [T0],
             [np.full((6, 8), 2.0, np.float32)], [T0])  # fmt: skip
    anchored = ["--anchor-topic", GT, "--anchor-fraction", "0.5"]
    cases = [
        (["--samples", "-1"], "samples must be >= 0"),
        (["--min-depth", "5", "--max-depth", "2"], "min_depth < max_depth"),
        *[
            (["--slop", slop], f"slop must be in [0, 1] s (under half a frame period), got {got}")
            for slop, got in [("-0.1", "-0.1"), ("inf", "inf"), ("nan", "nan"), ("1.5", "1.5")]
        ],
        *[
            (
                ["--baseline-depth", depth],
                f"baseline_depth must be inside the scoring range [0.001, 10] m, got {got}",
            )
            for depth, got in [
                ("inf", "inf"),
                ("1e30", "1e+30"),
                ("0", "0.0"),
                ("-2", "-2.0"),
                ("nan", "nan"),
                ("10.5", "10.5"),
            ]  # fmt: skip
        ],
        (["--baseline-depth", "5", "--max-depth", "4"], "[0.001, 4] m, got 5.0"),
        (["--anchor-seed", "3"], "anchor_seed set without an anchor topic"),
        *[
            (
                [*anchored, "--anchor-seed", seed],
                f"anchor_seed must be an integer in [0, 2**32 - 1], got {seed}",
            )
            for seed in ("-1", str(2**32))
        ],
    ]
    for extra, reason in cases:
        code, report = run_eval(tmp_path / "bag", tmp_path / "out", *extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and reason in err and len(err.splitlines()) == 1, (extra, err)
        assert report == {} and not (tmp_path / "out").exists()
    # The bounds themselves are accepted.
    for extra in (["--slop", "0"], ["--slop", "1"], ["--baseline-depth", "10"],
                  [*anchored, "--anchor-seed", str(2**32 - 1)]):  # fmt: skip
        code, _ = run_eval(tmp_path / "bag", tmp_path / "ok", *extra)
        assert code == 0, (extra, capsys.readouterr().err)
