"""Bag evaluation of foundation models (tiny random ``hf_depth`` checkpoints): a relative model
is aligned per frame in inverse depth (or anchored in inverse depth, as the node does), a
prompt model takes the anchor topic as its depth prompt, and a comparison scores each model
the way it needs and says so."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import GT, IMAGE, PERIOD, T0, write_messages
from model_helpers.hf_models import hf_checkpoint

from moa_depth_ros.anchoring import AnchorSettings, AnchorTracker, anchor_mask, sparse_subset
from moa_depth_ros.bags.compare import SCORED_SECTION, compare_bag
from moa_depth_ros.bags.evaluate import EvalSettings, evaluate_bag
from moa_depth_ros.cli.bag import main
from moa_depth_ros.evaluation.report import write_report
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.msgs.rosbags_messages import image_message

ANCHOR = "/camera/depth/registered"
H, W = 48, 64
RANGE = (1e-3, 10.0)  # the "none" protocol's
#: The ground truth of the relative-model bags: 1/(S·output + T), what an exact fit recovers.
S, T = 0.05, 0.12


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("hf")
    names = {"relative": "depth_anything_relative", "metric": "depth_anything_metric",
             "prompt": "prompt_depth_anything"}  # fmt: skip
    return {kind: hf_checkpoint(name, directory) for kind, name in names.items()}


@pytest.fixture(scope="module")
def estimators(models) -> dict:
    return {
        kind: load_estimator(InferenceOptions(checkpoint=str(path), device="cpu"))
        for kind, path in models.items()
    }


def images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(count)]


def inverse_affine_truth(relative: np.ndarray) -> np.ndarray:
    """Depth whose inverse is S·output + T where the relative output is positive (NaN, no
    ground truth, elsewhere): 0.5-8.3 m for outputs of 0-38."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(relative > 0, 1.0 / (S * relative + T), np.nan).astype(np.float32)


def write_bag(
    path: Path, rgbs: list[np.ndarray], gt: list[np.ndarray], anchors: list | None = None
) -> list[int]:
    """Image and ground truth at T0 + i·PERIOD, the anchor (None: not recorded) 40 ms later."""
    stamps = [T0 + i * PERIOD for i in range(len(rgbs))]
    messages = []
    for i, (rgb, truth, stamp) in enumerate(zip(rgbs, gt, stamps, strict=True)):
        messages += [(IMAGE, stamp, image_message(rgb, stamp, "cam")),
                     (GT, stamp, image_message(truth, stamp, "cam"))]  # fmt: skip
        if anchors is not None and anchors[i] is not None:
            messages.append((ANCHOR, stamp + 40_000_000, image_message(anchors[i], stamp, "cam")))
    write_messages(path, sorted(messages, key=lambda m: m[1]))
    return stamps


def cli(bag: Path, out: Path, *extra: str) -> tuple[int, dict]:
    argv = ["eval", str(bag), "--image-topic", IMAGE, "--gt-topic", GT, "--device", "cpu"]
    code = main([*argv, "--no-progress", "--out", str(out), *extra])
    report = out / "report.json"
    return code, json.loads(report.read_text()) if report.exists() else {}


def test_a_relative_model_is_aligned_in_inverse_depth_automatically(
    tmp_path: Path, models, estimators
) -> None:
    rgbs = images(3)
    relative = [estimators["relative"].predict(rgb).depth for rgb in rgbs]
    gt = [inverse_affine_truth(r) for r in relative]
    write_bag(tmp_path / "bag", rgbs, gt)
    settings = EvalSettings(IMAGE, GT, checkpoint=str(models["relative"]), device="cpu")
    scored: dict[int, np.ndarray] = {}
    report = evaluate_bag(tmp_path / "bag", settings, progress=False,
                          on_prediction=scored.__setitem__).report  # fmt: skip
    assert report.settings["align"] == "scale_shift_inverse (relative model)"
    assert report.settings["model_output"] == "relative"
    assert "aligned per frame to the ground truth (scale_shift_inverse" in report.settings["scored"]
    overall = report.rows["prediction"]
    assert overall["count"] == 3 and overall["abs_rel"] < 1e-5  # the exact inverse fit
    assert overall["delta1"] == 1.0 and overall["pred_usable"] == 1.0
    for stamp, output in zip(sorted(scored), relative, strict=True):  # the model's own values
        np.testing.assert_array_equal(scored[stamp], output)

    # Ground truth that is not affine in inverse depth: the number a hand fit gives.
    noisy = [g * np.random.default_rng(i).uniform(0.8, 1.2, g.shape).astype(np.float32)
             for i, g in enumerate(gt)]  # fmt: skip
    write_bag(tmp_path / "noisy", rgbs, noisy)
    report = evaluate_bag(tmp_path / "noisy", settings, progress=False).report
    by_hand = []
    for output, truth in zip(relative, noisy, strict=True):
        valid = np.isfinite(truth) & (truth < RANGE[1]) & (output > 0)
        s, t = np.polyfit(output[valid].astype(np.float64), 1.0 / truth[valid].astype(float), 1)
        depth = np.clip(1.0 / (s * output[valid] + t), *RANGE)
        by_hand.append(np.mean(np.abs(depth - truth[valid]) / truth[valid]))
    assert report.rows["prediction"]["abs_rel"] == pytest.approx(np.mean(by_hand), rel=1e-4)
    assert report.rows["prediction"]["abs_rel"] > 0.05


def test_the_cli_aligns_a_relative_model_and_refuses_a_depth_alignment(
    tmp_path: Path, models, estimators, capsys
) -> None:
    rgbs = images(2)
    gt = [inverse_affine_truth(estimators["relative"].predict(rgb).depth) for rgb in rgbs]
    write_bag(tmp_path / "bag", rgbs, gt)
    model = ["--checkpoint", str(models["relative"])]
    code, report = cli(tmp_path / "bag", tmp_path / "auto", *model)
    assert code == 0, capsys.readouterr().err
    assert report["settings"]["align"] == "scale_shift_inverse (relative model)"
    assert report["overall"]["abs_rel"] < 1e-5 and report["overall"]["count"] == 2
    assert "scored: relative inverse depth" in capsys.readouterr().out
    code, report = cli(tmp_path / "bag", tmp_path / "asked", *model, "--align",
                       "scale_shift_inverse")  # fmt: skip
    assert code == 0 and report["settings"]["align"] == "scale_shift_inverse"
    for align in ("median", "scale_shift"):
        code, report = cli(tmp_path / "bag", tmp_path / align, *model, "--align", align)
        err = capsys.readouterr().err.strip()
        assert code == 2 and report == {} and len(err.splitlines()) == 1, err
        assert err == (
            "moa-depth-bag: error: depth_anything_relative.safetensors gives relative inverse "
            f"depth (unknown scale and shift): --align {align} aligns depth, not inverse depth; "
            "use --align scale_shift_inverse (what a relative model gets by default) or anchor "
            "it with --anchor-topic"
        )


def test_a_relative_model_is_anchored_in_inverse_depth_as_the_node_does(
    tmp_path: Path, models, estimators, capsys
) -> None:
    """Frames 0 and 1 have no anchor: before the first fit nothing is published, so they are
    counted, not scored. Frame 4 has none either, but goes out with the fit so far."""
    rgbs = images(5)
    relative = [estimators["relative"].predict(rgb).depth for rgb in rgbs]
    gt = [inverse_affine_truth(r) for r in relative]
    anchors = [None, None, gt[2], gt[3], None]
    stamps = write_bag(tmp_path / "bag", rgbs, gt, anchors)
    settings = EvalSettings(IMAGE, GT, checkpoint=str(models["relative"]), device="cpu",
                            anchor_topic=ANCHOR, anchor_mode="scale_shift")  # fmt: skip
    scored: dict[int, np.ndarray] = {}
    report = evaluate_bag(tmp_path / "bag", settings, progress=False,
                          on_prediction=scored.__setitem__).report  # fmt: skip
    counts = report.counts
    assert (counts["matched"], counts["evaluated"], counts["unpublished_no_fit"]) == (5, 3, 2)
    assert (counts["anchor_frames_missing"], counts["anchor_frames_anchored"]) == (3, 2)
    assert [row["gt_stamp_ns"] for row in report.per_frame] == stamps[2:]
    assert [row["anchor"] for row in report.per_frame] == ["anchored", "anchored", "missing"]
    assert report.rows["prediction"]["abs_rel"] < 1e-4  # 1/(S·output + T) recovered
    assert report.settings["align"] == "none" and report.settings["anchor_space"] == "inverse_depth"
    assert "scale_shift fit in inverse depth" in report.settings["scored"]
    anchoring = report.sections["anchoring"]
    assert anchoring["space"].startswith("inverse_depth")
    assert anchoring["mean_scale"] == pytest.approx(S, rel=1e-4)
    assert anchoring["mean_shift"] == pytest.approx(T, rel=1e-4)
    assert [row["anchor_scale"] for row in report.per_frame] == pytest.approx([S] * 3, rel=1e-4)
    # Bit for bit what the node's anchoring core publishes for these frames.
    tracker = AnchorTracker(AnchorSettings(mode="scale_shift", space="inverse_depth",
                                           min_depth=RANGE[0], max_depth=RANGE[1]))  # fmt: skip
    node = [tracker.anchor(r, a).depth for r, a in zip(relative, anchors, strict=True)]
    assert node[0] is None and node[1] is None
    assert sorted(scored) == stamps[2:]
    for stamp, depth in zip(stamps[2:], node[2:], strict=True):
        assert scored[stamp].tobytes() == depth.tobytes()

    # mode none would never publish a relative model: refused, one line.
    extra = ["--anchor-topic", ANCHOR, "--anchor-mode", "none", "--anchor-fill", "holes"]
    code, _ = cli(tmp_path / "bag", tmp_path / "none", "--checkpoint", str(models["relative"]),
                  *extra)  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "gives relative depth, not metres: --anchor-mode none fits nothing" in err


def test_a_prompt_model_takes_the_anchor_topic_as_its_prompt(
    tmp_path: Path, models, estimators, capsys
) -> None:
    """The prompt of each frame is the anchor after the --anchor-fraction subset (drawn with
    the seed, in stamp order, as anchoring draws it), holes outside the depth range; frames
    without a usable prompt are not predicted, and counted."""
    rgbs = images(5)
    rng = np.random.default_rng(11)
    gt = [rng.uniform(0.5, 5.0, (H, W)).astype(np.float32) for _ in rgbs]
    anchors = [gt[0], None, gt[2] * 1.1, np.zeros((H, W), np.uint16), gt[4]]  # 16UC1 0: no data
    stamps = write_bag(tmp_path / "bag", rgbs, gt, anchors)
    settings = EvalSettings(IMAGE, GT, checkpoint=str(models["prompt"]), device="cpu",
                            anchor_topic=ANCHOR, anchor_fraction=0.3, anchor_seed=5)  # fmt: skip
    scored: dict[int, np.ndarray] = {}
    report = evaluate_bag(tmp_path / "bag", settings, progress=False,
                          on_prediction=scored.__setitem__).report  # fmt: skip
    draws = np.random.default_rng(5)
    expected = {}
    for rgb, anchor, stamp in zip(rgbs, anchors, stamps, strict=True):
        if anchor is None:
            continue
        metric = anchor if anchor.dtype == np.float32 else np.full((H, W), np.nan, np.float32)
        subset = sparse_subset(metric, 0.3, draws)  # drawn for every anchor of the image's size
        valid = anchor_mask(subset, RANGE)
        if valid.any():
            prompt = np.where(valid, subset, np.nan).astype(np.float32)
            expected[stamp] = estimators["prompt"].predict(rgb, RANGE, prompt_depth=prompt).depth
    assert sorted(scored) == sorted(expected) == [stamps[0], stamps[2], stamps[4]]
    for stamp, depth in expected.items():
        np.testing.assert_array_equal(scored[stamp], depth)
    counts = report.counts
    assert (counts["evaluated"], counts["anchor_frames_prompted"]) == (3, 3)
    assert (counts["anchor_frames_missing"], counts["anchor_frames_too_few_points"]) == (1, 1)
    assert "anchor_frames_anchored" not in counts and "unpublished_no_fit" not in counts
    assert report.settings["anchor_mode"] == "depth_prompt"
    assert "anchor_smoothing" not in report.settings  # no fit: its options are not recorded
    assert f"{ANCHOR} (30 % of its pixels) as its depth prompt, no fit" in report.settings["scored"]
    assert report.sections["anchoring"]["mode"] == "depth_prompt"
    points = [row["anchor_points"] for row in report.per_frame]
    assert all(0.2 * H * W < p < 0.4 * H * W for p in points)

    # A fit asked for is not applied on top (documented): the same predictions; and the
    # node's anchor_mode none for a prompt model is accepted.
    for mode in ("scale_shift", "none"):
        again: dict[int, np.ndarray] = {}
        other = replace(settings, anchor_mode=mode)
        result = evaluate_bag(tmp_path / "bag", other, progress=False,
                              on_prediction=again.__setitem__)  # fmt: skip
        assert result.report.settings["anchor_mode"] == "depth_prompt"
        for stamp, depth in scored.items():
            np.testing.assert_array_equal(again[stamp], depth)

    # --anchor-fill holes applies, as the node applies anchor_fill to a prompt model: the
    # prompt's pixels where it has them, the model's elsewhere.
    filled: dict[int, np.ndarray] = {}
    evaluate_bag(tmp_path / "bag", replace(settings, anchor_fill="holes"), progress=False,
                 on_prediction=filled.__setitem__)  # fmt: skip
    draws = np.random.default_rng(5)
    for anchor, stamp in zip(anchors, stamps, strict=True):
        if anchor is None:
            continue
        metric = anchor if anchor.dtype == np.float32 else np.full((H, W), np.nan, np.float32)
        subset = sparse_subset(metric, 0.3, draws)
        if stamp not in scored:
            continue
        measured = anchor_mask(subset, RANGE)
        np.testing.assert_array_equal(filled[stamp][measured], subset[measured])
        np.testing.assert_array_equal(filled[stamp][~measured], scored[stamp][~measured])

    # Without an anchor topic there is no prompt: refused, one line.
    code, report = cli(tmp_path / "bag", tmp_path / "out", "--checkpoint", str(models["prompt"]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and report == {}
    assert err == (
        "moa-depth-bag: error: prompt_depth_anything.safetensors takes a depth prompt (metric "
        "depth registered to the image): give it with --anchor-topic (with --anchor-fraction "
        "to simulate a sparse sensor)"
    )


def test_three_models_compared_through_the_cli(tmp_path: Path, models, estimators, capsys):
    """The project's own tiny model, Depth Anything metric and relative: one report, each
    model scored as it needs (the relative one aligned in inverse depth, and said so), each
    with its own time per frame and picture column."""
    from conftest import TINY_DEPTHCLIP

    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    seed = save_checkpoint(build_model(TINY_DEPTHCLIP).eval(), tmp_path / "seed.safetensors")
    rgbs = images(3)
    gt = [inverse_affine_truth(estimators["relative"].predict(rgb).depth) for rgb in rgbs]
    write_bag(tmp_path / "bag", rgbs, gt)
    checkpoints = [seed, models["metric"], models["relative"]]
    argv = [arg for path in checkpoints for arg in ("--checkpoint", str(path))]
    out = tmp_path / "out"
    code, report = cli(tmp_path / "bag", out, *argv, "--samples", "2", "--baseline-depth", "3")
    assert code == 0, capsys.readouterr().err
    labels = ["seed.safetensors", "depth_anything_metric.safetensors",
              "depth_anything_relative.safetensors"]  # fmt: skip
    assert list(report["models"]) == labels and "overall" not in report
    assert list(report["references"]) == ["constant 3 m baseline"]
    assert all(row["count"] == 3 for row in report["models"].values())
    relative = report["models"][labels[2]]
    assert relative["abs_rel"] < 1e-5  # aligned: the exact fit
    # The metric models as predicted (random weights: far off), never aligned.
    assert report["models"][labels[0]]["abs_rel"] > 0.05
    assert report["models"][labels[1]]["abs_rel"] > 0.05
    times = report["time_per_frame_ms"]
    assert list(times) == labels and all(0 < ms < 60_000 for ms in times.values())
    models_settings = report["settings"]["models"]
    assert [models_settings[label]["model_output"] for label in labels] == [
        "metric", "metric", "relative"
    ]  # fmt: skip
    assert models_settings[labels[2]]["align"] == "scale_shift_inverse (relative model)"
    assert models_settings[labels[0]]["align"] == "none"
    scored = report[SCORED_SECTION]
    assert scored[labels[0]] == scored[labels[1]] == "metres; as predicted"
    assert scored[labels[2]].startswith("relative inverse depth (unknown scale and shift); "
                                        "aligned per frame")  # fmt: skip
    stdout = capsys.readouterr().out
    assert all(f"{label}: " in stdout and "ms per frame" in stdout for label in labels)
    assert f"{labels[2]}: relative inverse depth" in stdout
    markdown = (out / "report.md").read_text()
    assert "## How each model was scored" in markdown
    import cv2

    assert cv2.imread(str(out / "samples.png")).shape[1] == W * (2 + 3)  # RGB | gt | 3 models


def test_a_comparison_gives_each_model_its_anchor(tmp_path: Path, models, estimators) -> None:
    """Relative, metric and prompt models with one anchor topic: the relative model anchored
    in inverse depth, the metric one in depth, the prompt model prompted; each model's counts
    and settings where they differ, and the picture grid the same frames for all (an empty
    column where a model gave nothing)."""
    rgbs = images(4)
    gt = [inverse_affine_truth(estimators["relative"].predict(rgb).depth) for rgb in rgbs]
    anchors = [None, gt[1], gt[2], gt[3]]
    write_bag(tmp_path / "bag", rgbs, gt, anchors)
    settings = EvalSettings(IMAGE, GT, device="cpu", samples=4, anchor_topic=ANCHOR,
                            anchor_mode="scale_shift")  # fmt: skip
    checkpoints = [models["relative"], models["metric"], models["prompt"]]
    comparison = compare_bag(tmp_path / "bag", settings, checkpoints, progress=False)
    report = comparison.report
    relative, metric, prompt = (Path(c).name for c in checkpoints)
    counts = report.counts
    assert counts["matched"] == 4 and "evaluated" not in counts  # differs: per model
    assert counts[f"{relative}: unpublished_no_fit"] == 1
    assert counts[f"{relative}: evaluated"] == counts[f"{prompt}: evaluated"] == 3
    assert counts[f"{metric}: evaluated"] == 4  # published unanchored until the first fit
    assert counts[f"{prompt}: anchor_frames_prompted"] == 3
    per_model = report.settings["models"]
    assert per_model[prompt]["anchor_mode"] == "depth_prompt"
    assert per_model[relative]["anchor_mode"] == per_model[metric]["anchor_mode"] == "scale_shift"
    assert per_model[relative]["anchor_space"] == "inverse_depth"
    assert "anchor_space" not in per_model[metric]
    scored = report.sections[SCORED_SECTION]
    assert "in inverse depth" in scored[relative] and "fit in depth" in scored[metric]
    assert "as its depth prompt, no fit" in scored[prompt]
    assert report.sections["anchoring"][f"{prompt}: mode"] == "depth_prompt"
    assert report.rows[relative]["abs_rel"] < 1e-4
    labels = [[s.label for s in samples] for samples in comparison.samples.values()]
    assert labels[0] == labels[1] == labels[2] and len(labels[0]) == 4
    assert np.isnan(comparison.samples[relative][0].pred).all()  # nothing published yet
    written = write_report(report, tmp_path / "out", compared=comparison.samples)
    assert written["grid"].stat().st_size > 0
