"""Train a depth model: moa-depth-train --config C [--set key=value ...] [--resume RUN_DIR]

Writes into run.out_dir: config.yaml, metrics.jsonl (one JSON line per logged step and per
validation), tb/ (TensorBoard), best.safetensors / last.safetensors (the node's checkpoint
format, with training and eval metadata) and state.pt (everything needed for an exact resume).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from moa_depth_ros.checkpoint import save_checkpoint
from moa_depth_ros.estimator import resolve_device
from moa_depth_ros.metrics import HIGHER_IS_BETTER
from moa_depth_ros.models import build_model, preprocess
from moa_depth_ros.visualize import depth_panel
from moa_depth_train.augment import Augmentation
from moa_depth_train.config import load_config
from moa_depth_train.datasets import make_dataset
from moa_depth_train.evaluate import evaluate_model
from moa_depth_train.losses import DepthLoss


class TrainingAborted(RuntimeError):  # noqa: N818 (it is an error; the name says what happened)
    """Too many consecutive steps with a non-finite loss or gradient."""


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch; `skip` drops the first samples (resume mid-epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch, self.skip = size, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator)[self.skip :].tolist())

    def __len__(self) -> int:
        return self.size - self.skip


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio` at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(self, config: dict, run_dir: Path, resume: bool = False, progress: bool = True):
        self.cfg, self.run_dir, self.progress = config, run_dir, progress
        run, optim = config["run"], config["optim"]
        state = torch.load(run_dir / "state.pt", weights_only=False) if resume else None
        if state is None:
            random.seed(run["seed"])
            np.random.seed(run["seed"])
            torch.manual_seed(run["seed"])
        self.device = resolve_device(run["device"])
        # On resume every tensor comes from state.pt: no pretrained download needed.
        self.model = build_model(config["model"], load_pretrained=state is None).to(self.device)

        data = config["data"]
        augment = Augmentation(data["augment"]) if data["augment"] is not None else None
        self.train_set = make_dataset(
            data["train"], "train", augment=augment, seed=run["seed"], data_root=data["data_root"]
        )
        self.val_set = (
            make_dataset(data["val"], "test", data_root=data["data_root"]) if data["val"] else None
        )
        self.sampler = EpochSampler(len(self.train_set), run["seed"])
        self.loader = DataLoader(
            self.train_set,
            batch_size=optim["batch_size"],
            sampler=self.sampler,
            num_workers=data["num_workers"],
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        self.steps_per_epoch = len(self.train_set) // optim["batch_size"]
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {optim['batch_size']} is larger than the {len(self.train_set)} "
                "training samples"
            )
        self.total_steps = optim["max_steps"] or optim["epochs"] * self.steps_per_epoch

        groups = self.model.trainable_parameter_groups()
        lrs = {"new_modules": optim["lr_new"], "backbone_blocks": optim["lr_backbone"]}
        self.optimizer = torch.optim.AdamW(
            [{"params": p, "lr": lrs[name], "name": name} for name, p in groups.items() if p],
            weight_decay=optim["weight_decay"],
        )
        self.trainable_params = [p for group in groups.values() for p in group]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            warmup_cosine(optim["warmup_steps"], self.total_steps, optim["min_lr_ratio"]),
        )
        amp = optim["amp"] if self.device.type == "cuda" else "none"
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"optim.amp must be none, bf16 or fp16, got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.loss_fn = DepthLoss(self.model.bin_centers, **config["loss"])

        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.best: float | None = None
        self.last_eval: dict | None = None
        if state is not None:
            self._load_state(state)
        self.writer = SummaryWriter(str(run_dir / "tb"))

    # -- state --------------------------------------------------------------------------
    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.best, self.last_eval = state["best"], state["last_eval"]
        _set_rng_state(state["rng"])

    def _save_state(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "bad_steps": self.bad_steps,
            "best": self.best,
            "last_eval": self.last_eval,
            "rng": _rng_state(),
        }
        tmp = self.run_dir / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.run_dir / "state.pt")

    def _checkpoint_metadata(self) -> dict:
        return {
            "training": {
                "config": self.cfg,
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "skipped_nonfinite_steps": self.bad_steps,
            },
            "dataset": {
                "train": str(self.cfg["data"]["train"]),
                "train_samples": len(self.train_set),
                "val": str(self.cfg["data"]["val"]),
            },
            "eval_metrics": self.last_eval,
        }

    def _log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- one step -----------------------------------------------------------------------
    def _train_step(self, batch: dict) -> dict[str, float] | None:
        """One optimization step; None when it was skipped for a non-finite loss/gradient."""
        images = batch["image"].to(self.device, non_blocking=True)
        depth = batch["depth"].to(self.device, non_blocking=True)
        inputs = preprocess(images, self.model.preprocessing)
        # The loss lives at the training input resolution; nearest keeps depths real.
        gt = F.interpolate(depth, size=inputs.shape[-2:], mode="nearest")
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            output = self.model(inputs)
        terms = self.loss_fn(output, gt)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(terms["total"]):
            return None
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.trainable_params, self.cfg["optim"]["grad_clip"]
        )
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        result = {name: value.item() for name, value in terms.items()}
        result["grad_norm"] = grad_norm.item()
        self._last_visual = (images[0], depth[0], output.depth[0].detach())
        return result

    def _log_images(self) -> None:
        image, gt, pred = self._last_visual
        rgb = image.permute(1, 2, 0).cpu().numpy()
        h, w = rgb.shape[:2]
        pred = F.interpolate(pred[None].float(), size=(h, w), mode="bilinear")[0, 0]
        lo, hi = self.model.config.get("min_depth", 0.1), self.model.config.get("max_depth", 10.0)
        panel = depth_panel(rgb, [gt[0].cpu().numpy(), pred.cpu().numpy()], lo, hi)
        self.writer.add_image("train/rgb_gt_pred", panel, self.step, dataformats="HWC")

    def validate(self) -> dict | None:
        if self.val_set is None:
            return None
        ev = self.cfg["eval"]
        metrics = evaluate_model(
            self.model,
            self.val_set,
            str(self.device),
            ev["protocol"],
            "none",
            ev["min_depth"],
            ev["max_depth"],
            self.cfg["data"]["val_max_samples"],
            progress=self.progress,
        )
        self.model.train()
        self.last_eval = {"step": self.step, **metrics}
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, self.step)
        self._log({"step": self.step, "val": metrics})
        key = ev["select_metric"]
        score = metrics[key] if key not in HIGHER_IS_BETTER else -metrics[key]
        if self.best is None or score < self.best:
            self.best = score
            save_checkpoint(
                self.model, self.run_dir / "best.safetensors", self._checkpoint_metadata()
            )
        return metrics

    # -- loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        run = self.cfg["run"]
        stop_at = min(self.total_steps, run["stop_after_steps"] or self.total_steps)
        self.model.train()
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc="train", disable=not self.progress
        )
        data_time = model_time = 0.0
        while self.step < stop_at:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, skip=in_epoch * self.cfg["optim"]["batch_size"])
            self.train_set.set_epoch(epoch)
            tick = time.perf_counter()
            for batch in self.loader:
                t_data = time.perf_counter()
                result = self._train_step(batch)
                self.scheduler.step()
                self.step += 1
                t_model = time.perf_counter()
                data_time += t_data - tick
                model_time += t_model - t_data
                bar.update(1)
                if result is None:
                    self.bad_steps += 1
                    self.consecutive_bad += 1
                    self._log({"step": self.step, "skipped": "non-finite loss or gradient"})
                    if self.consecutive_bad >= run["max_bad_steps"]:
                        raise TrainingAborted(
                            f"{self.consecutive_bad} consecutive steps had a non-finite loss or "
                            f"gradient (last at step {self.step}); check the data and the lr"
                        )
                else:
                    self.consecutive_bad = 0
                    bar.set_postfix(loss=f"{result['total']:.4f}")
                    if self.step % run["log_every"] == 0 or self.step == 1:
                        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
                        for name, value in result.items():
                            self.writer.add_scalar(f"train/{name}", value, self.step)
                        for name, value in lrs.items():
                            self.writer.add_scalar(f"lr/{name}", value, self.step)
                        self._log({"step": self.step, "train": result, "lr": lrs})
                    if self.step % run["image_every"] == 0:
                        self._log_images()
                if self.step % self.cfg["eval"]["every_steps"] == 0:
                    self.validate()
                if self.step % run["checkpoint_every"] == 0:
                    self._checkpoint()
                tick = time.perf_counter()
                if self.step >= stop_at:
                    break
        bar.close()
        if self.step >= self.total_steps and (self.last_eval or {}).get("step") != self.step:
            self.validate()
        self._checkpoint()
        self.writer.close()
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "skipped_steps": self.bad_steps,
            "data_seconds": data_time,
            "model_seconds": model_time,
            "last_eval": self.last_eval,
        }

    def _checkpoint(self) -> None:
        save_checkpoint(self.model, self.run_dir / "last.safetensors", self._checkpoint_metadata())
        self._save_state()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="a YAML file or a shipped config name (demo_synthetic, ...)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config (new run) or --resume RUN_DIR")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "state.pt").is_file():
            print(f"error: {run_dir} has no state.pt to resume from", file=sys.stderr)
            return 2
        config = load_config(run_dir / "config.yaml", args.set)
    else:
        config = load_config(args.config, args.set)
        run_dir = Path(config["run"]["out_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trainer = Trainer(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    summary = trainer.run()
    print(json.dumps({"run_dir": str(run_dir), **summary}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
