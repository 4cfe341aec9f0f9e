"""Training throughput: images/s with data-loading and model time reported separately.

CPU: the demo_synthetic config on synthetic frames written to disk. CUDA (when present):
full-size ViT-B/32 MoA-DepthCLIP at 224 with bf16 AMP, batch 64, fed from files on disk
(target ≥ 600 images/s).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from bench.common import emit
from moa_depth_ros.synthetic import write_synthetic_dataset
from moa_depth_train.config import TrainingConfig, load_config
from moa_depth_train.trainer import Trainer

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "20"))


def _run(config: dict, run_dir: Path) -> dict:
    summary = Trainer(TrainingConfig.from_dict(config), run_dir, progress=False).run()
    images = summary["step"] * config["optim"]["batch_size"]
    total = summary["data_seconds"] + summary["model_seconds"]
    return {
        "steps": summary["step"],
        "batch_size": config["optim"]["batch_size"],
        "images_per_s": images / total,
        "data_seconds": round(summary["data_seconds"], 3),
        "model_seconds": round(summary["model_seconds"], 3),
        "data_fraction": round(summary["data_seconds"] / total, 3),
    }


def _config(data: Path, run_dir: Path, overrides: list[str]) -> dict:
    return load_config(
        "demo_synthetic",
        [
            f"data.train={data / 'train_files.txt'}",
            "data.val=null",
            f"optim.max_steps={STEPS}",
            f"run.out_dir={run_dir}",
            "run.checkpoint_every=1000000",
            "run.image_every=1000000",
            *overrides,
        ],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_synthetic_dataset(tmp / "data", num_frames=160, width=320, height=240, seed=0)
        config = _config(tmp / "data", tmp / "cpu", ["run.device=cpu"])
        emit({"bench": "training_cpu", "config": "demo_synthetic", **_run(config, tmp / "cpu")})
        if not torch.cuda.is_available():
            emit({"bench": "training_cuda", "skipped": "no CUDA device on this machine"})
            return
        write_synthetic_dataset(tmp / "nyu_like", num_frames=1024, width=640, height=480, seed=1)
        config = _config(
            tmp / "nyu_like",
            tmp / "cuda",
            [
                "model={type: moa_depthclip, clip_pretrained: none}",
                "optim.batch_size=64",
                "optim.amp=bf16",
                "data.num_workers=12",
                "run.device=cuda",
            ],
        )
        result = _run(config, tmp / "cuda")
        emit(
            {
                "bench": "training_cuda",
                "device": torch.cuda.get_device_name(0),
                "torch": torch.__version__,
                "model": "moa_depthclip ViT-B/32 @224 (random init), bf16 AMP",
                **result,
                "target_images_per_s": 600,
                "target_met": result["images_per_s"] >= 600,
            }
        )
