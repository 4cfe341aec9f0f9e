"""Comparing models on one bag: the same frames for every model, hand-checked scores, each
model's time per frame from the same run, one report with a row and a picture column per model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import GT, IMAGE, PERIOD, T0, depth_frames, write_messages

from moa_depth_ros.bags.compare import compare_bag, model_labels
from moa_depth_ros.bags.eval_plan import ModelOutput
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
    comparison = compare_bag(bag, settings, ["exact.safetensors", "far.onnx"], progress=False,
                             predictor=factory, describe=ModelOutput)  # fmt: skip
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
    # A row per model under "models", the baseline alone a reference, no model "overall".
    assert list(report["models"]) == ["exact.safetensors", "far.onnx"] and "overall" not in report
    assert report["models"]["far.onnx"]["abs_rel"] == pytest.approx(0.25, abs=1e-6)
    assert list(report["references"]) == ["constant 2 m baseline"]
    assert report["time_per_frame_ms"] == {"exact.safetensors": 10.0, "far.onnx": 12.5}
    assert set(report["settings"]["models"]) == {"exact.safetensors", "far.onnx"}
    grid = written["grid"]
    import cv2

    picture = cv2.imread(str(grid))
    assert picture.shape[1] == 16 * 4  # RGB | ground truth | exact | far
    markdown = written["markdown"].read_text()
    assert "one column per model" in markdown and "far.onnx" in markdown


def test_labels_are_short_and_unique(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert model_labels(["a/m.safetensors", "b/n.onnx"]) == ["m.safetensors", "n.onnx"]
    assert model_labels(["a/m.onnx", "b/m.onnx"]) == ["a/m.onnx", "b/m.onnx"]
    # Same file and folder names: as many folders as it takes, and only where it takes them.
    assert model_labels(["runs/a/ckpt/best.safetensors", "runs/b/ckpt/best.safetensors",
                         "c/best.safetensors"]) == [
        "a/ckpt/best.safetensors", "b/ckpt/best.safetensors", "c/best.safetensors"
    ]  # fmt: skip
    assert model_labels(["x/m.onnx", "y/x/m.onnx"]) == [f"{tmp_path.name}/x/m.onnx", "y/x/m.onnx"]
    # One file given twice, however it is spelled: refused, saying which file.
    for twice in (["a/m.onnx", "a/m.onnx"], ["m.onnx", "./m.onnx"], ["m.onnx", "a/../m.onnx"]):
        with pytest.raises(ValueError) as info:
            model_labels(twice)
        assert str(info.value) == (
            f"the same model is given twice: {twice[0]} and {twice[1]} are both "
            f"{(tmp_path / twice[0]).resolve()}"
        )
    (tmp_path / "real.onnx").write_bytes(b"")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "real.onnx")
    with pytest.raises(ValueError, match="given twice: real.onnx and link.onnx are both"):
        model_labels(["real.onnx", "link.onnx"])


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
    assert list(report["models"]) == ["a/m.safetensors", "b/m.safetensors"]
    assert list(report["references"]) == ["constant 2 m baseline"] and "overall" not in report
    assert all(row["count"] == 3 for row in report["models"].values())
    assert set(report["time_per_frame_ms"]) == {"a/m.safetensors", "b/m.safetensors"}
    assert (out / "samples.png").stat().st_size > 0

    # A broken file is refused before the first model runs: nothing printed, nothing written.
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    code = main([*argv, "--checkpoint", str(first), "--checkpoint", str(broken),
                 "--out", str(tmp_path / "out2")])  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "broken.safetensors" in err
    assert captured.out == "" and not (tmp_path / "out2").exists()
    # So is a file that is no exported graph, alone or compared (ONNX's error, one line).
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    for models in ([junk], [first, junk]):
        checkpoints = [arg for path in models for arg in ("--checkpoint", str(path))]
        assert main([*argv, *checkpoints, "--out", str(tmp_path / "out3")]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"moa-depth-bag: error: {junk}: not a readable ONNX file")
        assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""


def test_a_model_that_cannot_be_scored_is_refused_before_any_model_runs(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A metric and a relative model with --align median: the relative one's refusal comes
    first, with no model loaded or evaluated (no counts line) and no report written; so do
    a prompt model without --anchor-topic and a relative one with --anchor-mode none."""
    from model_helpers.hf_models import hf_checkpoint

    from moa_depth_ros.bags import compare
    from moa_depth_ros.cli.bag import main

    bag, _ = _bag(tmp_path, count=2)
    metric = hf_checkpoint("depth_anything_metric", tmp_path)
    relative = hf_checkpoint("depth_anything_relative", tmp_path)
    prompt = hf_checkpoint("prompt_depth_anything", tmp_path)
    capsys.readouterr()  # transformers' save_pretrained progress
    loaded: list[str] = []
    monkeypatch.setattr(compare, "estimator_predictor", lambda s: loaded.append(s.checkpoint))
    argv = ["eval", str(bag), "--image-topic", IMAGE, "--gt-topic", GT, "--no-progress"]
    cases = [
        ([metric, relative], ["--align", "median"],
         "depth_anything_relative.safetensors gives relative inverse depth (unknown scale and "
         "shift): --align median aligns depth, not inverse depth"),
        ([metric, prompt], [], "prompt_depth_anything.safetensors takes a depth prompt"),
        ([metric, relative], ["--anchor-topic", GT, "--anchor-mode", "none", "--anchor-fill",
                              "holes"],
         "depth_anything_relative.safetensors gives relative depth, not metres: --anchor-mode "
         "none fits nothing"),
    ]  # fmt: skip
    for models, extra, reason in cases:
        out = tmp_path / "out"
        checkpoints = [arg for path in models for arg in ("--checkpoint", str(path))]
        assert main([*argv, *checkpoints, *extra, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.startswith(f"moa-depth-bag: error: {reason}") and len(err.splitlines()) == 1
        assert captured.out == "" and loaded == [] and not out.exists()
