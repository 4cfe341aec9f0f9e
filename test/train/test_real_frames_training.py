"""Fine-tuning on real frames (TUM RGB-D fr3/teddy, test/fixtures/tum_fr3_teddy): a tiny model
trained with ``moa-depth-train`` on a bag of five real frames scores better on a bag of the
three frames that follow them (0.5-1.3 s after the last), scored by ``moa-depth-bag eval``'s
evaluate_bag, and better than the training frames' median depth as a constant."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from bag_helpers.real_frames import DEPTH, IMAGE, real_frames, write_real_bag

from moa_depth_ros.bags.evaluate import EvalSettings, evaluate_bag
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import read_metadata, save_checkpoint
from moa_depth_train.cli.train import main as train_main

TINY_MODEL = {
    "type": "moa_depthclip",
    "clip_model": "ViT-T-32-test",
    "clip_pretrained": "none",
    "image_size": 64,
    "num_bins": 16,
    "adapter_dim": 8,
    "gate_hidden": 8,
    "min_depth": 0.1,
    "max_depth": 10.0,
    "trainable_blocks": list(range(12)),
}


def _abs_rel(bag: Path, checkpoint: Path, baseline: float | None = None) -> dict:
    settings = EvalSettings(
        image_topic=IMAGE, gt_topic=DEPTH, checkpoint=str(checkpoint), device="cpu",
        baseline_depth=baseline,
    )  # fmt: skip
    report = evaluate_bag(bag, settings, progress=False).report
    assert report.counts["evaluated"] == report.counts["matched"], report.counts
    return {label: row["abs_rel"] for label, row in report.rows.items()}


def test_fine_tuning_on_real_frames_improves_the_held_out_frames(tmp_path, capsys):
    started = time.monotonic()
    frames = real_frames()
    train_bag = write_real_bag(tmp_path / "train", frames[:5])
    held_bag = write_real_bag(tmp_path / "held", frames[5:])
    # The constant baseline: the training frames' median depth.
    median = float(np.nanmedian(np.stack([f.metres for f in frames[:5]])))

    initial = save_checkpoint(build_model(TINY_MODEL, load_pretrained=False), tmp_path / "i.st")
    before = _abs_rel(held_bag, initial)["prediction"]

    sets = [
        "model.clip_model=ViT-T-32-test", "model.image_size=64", "model.num_bins=16",
        "model.adapter_dim=8", "model.gate_hidden=8",
        "data.type=bag", "data.train=null", "data.val=null", f"data.bags=[{train_bag}]",
        f"data.image_topic={IMAGE}", f"data.depth_topic={DEPTH}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "optim.batch_size=5", "optim.max_steps=40", "optim.warmup_steps=4",
        "eval.every_steps=1000", "run.image_every=1000", "run.checkpoint_every=1000",
        f"run.out_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    argv = ["--config", "demo_synthetic", "--no-progress", "--init", str(initial)]
    assert train_main([*argv, *(f"--set={s}" for s in sets)]) == 0
    assert "bag train: 5 pairs within 20 ms" in capsys.readouterr().err
    tuned = tmp_path / "run" / "last.safetensors"
    assert read_metadata(tuned)["bags"][0]["pairs"] == 5

    after = _abs_rel(held_bag, tuned, baseline=median)
    baseline = after[f"constant {median:g} m baseline"]
    seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\nreal held-out AbsRel: before fine-tuning {before:.3f}, after "
              f"{after['prediction']:.3f} (constant {median:.2f} m: {baseline:.3f}); "
              f"{seconds:.0f} s")  # fmt: skip
    # Measured (seed 0): 0.828 before, 0.643 after, constant 0.809. Over seeds 0-5 the tuned
    # model scored 0.637-0.701, always below both its random start and the constant depth: it
    # learned where in the image things are near, not only the depth scale.
    assert after["prediction"] < before, (before, after)
    assert after["prediction"] < baseline, after
