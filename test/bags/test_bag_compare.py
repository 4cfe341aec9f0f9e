"""Comparing models on one bag: the same frames for every model, hand-checked scores, each
model's time per frame from the same run, one report with a row and a picture column per model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import GT, IMAGE, PERIOD, T0, depth_frames, write_messages

from moa_depth_ros.bags.compare import compare_bag, model_labels
from moa_depth_ros.bags.evaluate import EvalSettings, Predictor
from moa_depth_ros.evaluation.report import write_report
from moa_depth_ros.msgs.rosbags_messages import image_message


def _scaled_models(gt: list[np.ndarray], scales: dict[str, float]):
    """A predictor factory whose "checkpoint" named s.x predicts scale × the frame's ground
    truth (recognised by the image, which encodes the frame index), taking 10 ms × scale."""

    def factory(settings: EvalSettings) -> Predictor:
        scale = scales[Path(settings.checkpoint).name]
        seconds: list[float] = []

        def predict(rgb: np.ndarray) -> np.ndarray:
            seconds.append(0.01 * scale)
            return scale * gt[int(rgb[0, 0, 0]) - 100]

        return Predictor(predict, seconds=seconds)

    return factory


def _bag(tmp_path: Path, count: int = 5) -> tuple[Path, list[np.ndarray]]:
    """Images carrying their frame index (grey level 100 + index) and ground truth."""
    gt = depth_frames(count, height=12, width=16)
    stamps = [T0 + i * PERIOD for i in range(count)]
    messages = []
    for index, (depth, stamp) in enumerate(zip(gt, stamps, strict=True)):
        rgb = np.full((12, 16, 3), 100 + index, np.uint8)
        messages += [(IMAGE, stamp, image_message(rgb, stamp, "cam")),
                     (GT, stamp, image_message(depth, stamp, "cam"))]  # fmt: skip
    bag = tmp_path / "indexed"
    write_messages(bag, messages)
    return bag, gt


def test_every_model_is_scored_on_the_same_frames_with_its_own_time(tmp_path: Path) -> None:
    bag, gt = _bag(tmp_path)
    settings = EvalSettings(IMAGE, GT, samples=2, baseline_depth=2.0)
    factory = _scaled_models(gt, {"exact.safetensors": 1.0, "far.onnx": 1.25})
    comparison = compare_bag(
        bag, settings, ["exact.safetensors", "far.onnx"], progress=False, predictor=factory
    )
    rows = comparison.report.rows
    assert list(rows) == ["exact.safetensors", "far.onnx", "constant 2 m baseline"]
    assert rows["exact.safetensors"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert rows["far.onnx"]["abs_rel"] == pytest.approx(0.25, abs=1e-6)
    assert rows["exact.safetensors"]["ms_per_frame"] == pytest.approx(10.0)
    assert rows["far.onnx"]["ms_per_frame"] == pytest.approx(12.5)
    assert comparison.report.counts["matched"] == 5
    frames = [(row["model"], row["gt_stamp_ns"]) for row in comparison.report.per_frame]
    assert len(frames) == 10 and {m for m, _ in frames} == {"exact.safetensors", "far.onnx"}
    labels = [[s.label for s in samples] for samples in comparison.samples.values()]
    assert labels[0] == labels[1] and len(labels[0]) == 2  # the same frames in the grid

    written = write_report(
        comparison.report, tmp_path / "out", compared=comparison.samples, min_depth=0.1
    )
    report = json.loads(written["json"].read_text())
    assert report["time_per_frame_ms"] == {"exact.safetensors": 10.0, "far.onnx": 12.5}
    assert set(report["settings"]["models"]) == {"exact.safetensors", "far.onnx"}
    grid = written["grid"]
    import cv2

    picture = cv2.imread(str(grid))
    assert picture.shape[1] == 16 * 4  # RGB | ground truth | exact | far
    markdown = written["markdown"].read_text()
    assert "one column per model" in markdown and "far.onnx" in markdown


def test_labels_are_short_and_unique() -> None:
    assert model_labels(["a/m.safetensors", "b/n.onnx"]) == ["m.safetensors", "n.onnx"]
    assert model_labels(["a/m.onnx", "b/m.onnx"]) == ["a/m.onnx", "b/m.onnx"]
    with pytest.raises(ValueError, match="the same model is given twice"):
        model_labels(["a/m.onnx", "a/m.onnx"])


def test_a_real_checkpoint_is_timed_by_its_estimator(tmp_path: Path) -> None:
    """The default predictor: a tiny checkpoint through load_estimator, timed per frame."""
    from conftest import TINY_DEPTHCLIP

    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    bag, _ = _bag(tmp_path, count=3)
    checkpoint = save_checkpoint(build_model(TINY_DEPTHCLIP).eval(), tmp_path / "dc.safetensors")
    settings = EvalSettings(IMAGE, GT, samples=1, device="cpu")
    comparison = compare_bag(bag, settings, [checkpoint], progress=False)
    row = comparison.report.rows["dc.safetensors"]
    assert row["count"] == 3 and np.isfinite(row["abs_rel"])
    assert 0 < row["ms_per_frame"] < 60_000


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    bag, _ = _bag(tmp_path, count=2)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        compare_bag(bag, EvalSettings(IMAGE, GT), [], progress=False)
    with pytest.raises(ValueError, match="given as checkpoints"):
        compare_bag(bag, EvalSettings(IMAGE, GT, checkpoint="x"), ["y"], progress=False)


def test_the_cli_compares_checkpoints_in_one_report(tmp_path: Path, capsys) -> None:
    from conftest import TINY_DEPTHCLIP, TINY_MOA

    from moa_depth_ros.cli.bag import main
    from moa_depth_ros.models import build_model
    from moa_depth_ros.models.checkpoint import save_checkpoint

    bag, _ = _bag(tmp_path, count=3)
    first = save_checkpoint(build_model(TINY_DEPTHCLIP).eval(), tmp_path / "a" / "m.safetensors")
    second = save_checkpoint(build_model(TINY_MOA).eval(), tmp_path / "b" / "m.safetensors")
    argv = ["eval", str(bag), "--image-topic", IMAGE, "--gt-topic", GT, "--no-progress"]
    out = tmp_path / "out"
    code = main([*argv, "--checkpoint", str(first), "--checkpoint", str(second),
                 "--baseline-depth", "2", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert (
        "a/m.safetensors:" in stdout and "b/m.safetensors:" in stdout and "ms per frame" in stdout
    )
    report = json.loads((out / "report.json").read_text())
    assert list(report["references"]) == ["b/m.safetensors", "constant 2 m baseline"]
    assert report["overall"]["count"] == 3
    assert set(report["time_per_frame_ms"]) == {"a/m.safetensors", "b/m.safetensors"}
    assert (out / "samples.png").stat().st_size > 0

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    code = main([*argv, "--checkpoint", str(first), "--checkpoint", str(broken),
                 "--out", str(tmp_path / "out2")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "broken.safetensors" in err
