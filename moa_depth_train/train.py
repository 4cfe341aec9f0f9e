"""Train a depth model: moa-depth-train --config C [--set key=value ...] [--resume RUN_DIR]

Writes into run.out_dir: config.yaml, metrics.jsonl (one JSON line per logged step and per
validation), tb/ (TensorBoard), best.safetensors / last.safetensors (the node's checkpoint
format, with training and eval metadata), state.pt (everything an exact resume needs; tensors
and plain values only) and, when the config names a test set, test_eval/ (the report of
best.safetensors on it). Under ``torchrun --nproc_per_node N`` it trains with
DistributedDataParallel (moa_depth_train.distributed).

``data.type: bag`` trains on rosbags (moa_depth_train.bag_dataset); ``--init CKPT`` starts from
a checkpoint's weights (fine-tuning). Checkpoints record the init file and the bags (name,
size, SHA-256) they were trained on.

Never loses a run: state is written before every validation; Ctrl-C / SIGTERM save a
resumable state at the current step and exit 130 / 143; config and data errors are one line
and exit 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from moa_depth_ros.bags.io import BagError
from moa_depth_ros.digests import file_sha256
from moa_depth_ros.errors import one_line
from moa_depth_ros.evaluation.metrics import HIGHER_IS_BETTER
from moa_depth_ros.evaluation.report import write_report
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.torch_backend import TorchBackend, resolve_device
from moa_depth_ros.models import build_model, preprocess, resolve_model_config
from moa_depth_ros.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from moa_depth_ros.visualize import depth_panel
from moa_depth_train.augment import Augmentation
from moa_depth_train.bag_dataset import BagDataset, bag_datasets
from moa_depth_train.config import DEFAULTS, load_config
from moa_depth_train.datasets import hold_out_scenes, make_dataset
from moa_depth_train.distributed import Distributed, EpochSampler
from moa_depth_train.ema import ModelEMA
from moa_depth_train.evaluate import evaluate_estimator
from moa_depth_train.losses import build_loss
from moa_depth_train.run_state import (
    MetricsLog,
    RunStateError,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from moa_depth_train.schedule import lr_schedule

__all__ = ["EpochSampler", "Trainer", "TrainingAborted", "TrainingInterrupted", "main"]

EXIT_ERROR = 2
#: Exit status after a signal: 128 + its number, as shells report it.
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingAborted(RuntimeError):  # noqa: N818 (it is an error; the name says what happened)
    """Too many consecutive steps with a non-finite loss or gradient, or without ground truth."""


class TrainingInterrupted(Exception):  # noqa: N818
    """SIGINT / SIGTERM: the state was saved at the current step."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class ValidationError(RuntimeError):
    """Validation failed; the state of the run was saved before it."""


def _dataset(data: dict, key: str, split: str, augment=None, seed: int = 0):
    """The dataset of ``data[key]`` with its own roots (``<key>_root``, ``<key>_depth_root``)."""
    root_key = "data_root" if key == "train" else f"{key}_root"
    depth_key = "depth_root" if key == "train" else f"{key}_depth_root"
    try:
        return make_dataset(
            data[key],
            split,
            augment=augment,
            seed=seed,
            data_root=data.get(root_key),
            kind=data["dataset"],
            depth_root=data.get(depth_key),
        )
    except ValueError as err:
        raise ValueError(f"data.{key}: {err}") from err


#: data.* keys only data.type: bag reads (set with image datasets, they would be ignored).
_BAG_KEYS = ("bags", "image_topic", "depth_topic", "camera_info_topic", "focal", "slop_ms",
             "stride", "segment_s", "cache_dir")  # fmt: skip


def _report(line: str) -> None:
    print(f"moa-depth-train: {line}", file=sys.stderr)


def _datasets(data: dict, augment, seed: int, progress: bool, main: bool) -> tuple[Any, Any, Any]:
    """(train, validation or None, test or None) as ``data`` describes them."""
    if data["type"] == "bag":
        return bag_datasets(data, augment, seed, progress, _report if main else None)
    if data["type"] != "files":
        raise ValueError(f"data.type must be 'files' or 'bag', got {data['type']!r}")
    stray = [k for k in _BAG_KEYS if data[k] != DEFAULTS["data"][k]]
    if stray:
        raise ValueError(f"data.{stray[0]} is set but data.type is 'files' (set data.type: bag)")
    train = _dataset(data, "train", "train", augment, seed)
    val = _dataset(data, "val", "test") if data["val"] else None
    if val is None and data["val_fraction"]:
        train_idx, val_idx = hold_out_scenes(train, data["val_fraction"], seed)
        val = train.subset(val_idx, augment=None)
        train = train.subset(train_idx, augment)
    test = _dataset(data, "test", "test") if data["test"] else None
    return train, val, test


#: Model config keys that say where the weights came from or which of them train, not what
#: the network computes: they may differ between an --init checkpoint and the run's config.
_INIT_FREE_KEYS = frozenset({"clip_pretrained", "trainable_blocks", "load_balance_weight"})


def _require_same_network(path: Path, theirs: dict, ours: dict) -> None:
    def comparable(config: dict) -> dict:
        return json.loads(json.dumps({k: v for k, v in config.items() if k not in _INIT_FREE_KEYS}))

    theirs, ours = comparable(theirs), comparable(ours)
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        shown = "; ".join(f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in differ[:4])
        raise CheckpointError(
            f"--init {path}: the checkpoint's model config differs from model.* ({shown}; "
            "checkpoint vs config); train with the checkpoint's model settings"
        )


def check_init(model_config: dict, path: str | Path) -> None:
    """CheckpointError unless ``path`` is a readable checkpoint of the network ``model_config``
    describes; from its metadata only, so a mistake shows before any data is decoded."""
    path = Path(path)
    document = read_metadata(path)
    try:
        theirs = resolve_model_config(document["model_config"])
    except ValueError as err:
        raise CheckpointError(f"--init {path}: invalid model config ({one_line(err)})") from err
    _require_same_network(path, theirs, resolve_model_config(model_config))


def load_init_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Copy the weights of checkpoint ``path`` (safetensors: loading runs no code) into
    ``model``, whose config must describe the same network; ``{"path", "sha256"}`` of the file.

    Raises:
        CheckpointError: an unreadable checkpoint or one of another model config.
    """
    path = Path(path)
    loaded = load_checkpoint(path, device="cpu")
    _require_same_network(path, loaded.model.config, model.config)
    model.load_state_dict(loaded.model.state_dict())
    return {"path": str(path), "sha256": file_sha256(path)}


class Trainer:
    def __init__(self, config: dict, run_dir: Path, resume: bool = False, progress: bool = True):
        self.cfg, self.run_dir = config, run_dir
        run, optim, data = config["run"], config["optim"], config["data"]
        self.dist = Distributed.from_environment()
        self.progress = progress and self.dist.is_main
        state = load_state(run_dir) if resume else None
        if state is None:
            np.random.seed(run["seed"])
            torch.manual_seed(run["seed"] + self.dist.rank)
        self.device = self.dist.device(resolve_device(run["device"]))
        self.dist.init(self.device)
        # Data first: a bad bag or list is reported before a large model is built, and a
        # wrong --init before the bags are decoded.
        fresh = state is None
        if fresh and run["init"]:
            check_init(config["model"], run["init"])
        augment = Augmentation(data["augment"]) if data["augment"] is not None else None
        # With several processes rank 0 decodes bags into the cache first; the others map it.
        first = data["type"] != "bag" or self.dist.is_main
        if not first:
            self.dist.barrier()
        self.train_set, self.val_set, self.test_set = _datasets(
            data, augment, run["seed"], self.progress, self.dist.is_main
        )
        if first and data["type"] == "bag":
            self.dist.barrier()

        # On resume every tensor comes from state.pt, with --init from that checkpoint: no
        # pretrained download needed.
        self.model = build_model(config["model"], load_pretrained=fresh and not run["init"])
        self.init_info = (
            load_init_weights(self.model, run["init"]) if fresh and run["init"] else None
        )
        self.model.to(self.device)

        self.select_on = config["eval"]["select_on"]
        if self.select_on not in ("val", "test"):
            raise ValueError(f"eval.select_on must be 'val' or 'test', got {self.select_on!r}")

        world = self.dist.world_size
        self.global_batch = optim["batch_size"] * world
        self.steps_per_epoch = len(self.train_set) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"global batch {self.global_batch} is larger than the {len(self.train_set)} "
                "training samples"
            )
        self.total_steps = optim["max_steps"] or optim["epochs"] * self.steps_per_epoch
        self.sampler = EpochSampler(len(self.train_set), run["seed"], self.dist.rank, world)
        workers = data["num_workers"]
        self.loader = DataLoader(
            self.train_set,
            batch_size=optim["batch_size"],
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            # Workers stay up between epochs: the sampler carries the epoch (see datasets).
            persistent_workers=workers > 0,
        )

        groups = self.model.trainable_parameter_groups()
        lrs = {"new_modules": optim["lr_new"], "backbone_blocks": optim["lr_backbone"]}
        self.optimizer = torch.optim.AdamW(
            [{"params": p, "lr": lrs[name], "name": name} for name, p in groups.items() if p],
            weight_decay=optim["weight_decay"],
        )
        self.trainable_params = [p for group in groups.values() for p in group]
        warmup = optim["warmup_steps"]
        if optim["warmup_ratio"] is not None:
            warmup = max(
                1, min(int(self.total_steps * optim["warmup_ratio"]), self.total_steps - 1)
            )
        schedule = lr_schedule(
            optim, warmup=warmup, total=self.total_steps, steps_per_epoch=self.steps_per_epoch
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        amp = optim["amp"] if self.device.type == "cuda" else "none"
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"optim.amp must be none, bf16 or fp16, got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.loss_fn = build_loss(config["loss"], self.model.bin_centers)
        self.loss_resolution = self.loss_fn.resolution
        self.ema = ModelEMA(self.model, optim["ema_decay"]) if optim["ema_decay"] else None
        self.forward = (
            DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Heads whose loss weight is 0 (SPACE-CLIP's third auxiliary head) get no
                # gradient; DDP must not wait for them.
                find_unused_parameters=True,
            )
            if self.dist.enabled
            else self.model
        )

        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.best: float | None = None
        self.last_eval: dict | None = None
        self.best_source = ""
        self.log = MetricsLog(run_dir, enabled=self.dist.is_main)
        if state is not None:
            self._load_state(state)
        self.writer = SummaryWriter(str(run_dir / "tb")) if self.dist.is_main else None
        self._stop_signal: int | None = None

    # -- state --------------------------------------------------------------------------
    def _load_state(self, state: dict) -> None:
        if state["step"] > self.total_steps:
            raise RunStateError(
                f"{self.run_dir / 'state.pt'}: the run is at step {state['step']} but the "
                f"schedule now has only {self.total_steps} steps; resume with at least that many"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.best, self.last_eval = state["best"], state["last_eval"]
        self.best_source = state.get("best_source", "")
        self.init_info = state.get("init")
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])
        self.log.truncate_after(self.step)

    def _save_state(self) -> None:
        rngs = self.dist.gather(rng_state())
        if not self.dist.is_main:
            return
        save_state(
            self.run_dir,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "step": self.step,
                "bad_steps": self.bad_steps,
                "best": self.best,
                "best_source": self.best_source,
                "last_eval": self.last_eval,
                "rng": rngs,
                "init": self.init_info,
            },
        )

    def _bag_records(self) -> list[dict]:
        """Every bag trained, validated or tested on: name, bytes, SHA-256, pair counts."""
        records = []
        for role, dataset in (("train", self.train_set), ("val", self.val_set),
                              ("test", self.test_set)):  # fmt: skip
            if isinstance(dataset, BagDataset):
                known = {r["sha256"] for r in records}
                records += [
                    {"role": role, **r} for r in dataset.records() if r["sha256"] not in known
                ]
        return records

    def _dataset_metadata(self) -> dict:
        data = self.cfg["data"]
        if data["type"] == "bag":
            kind, train = "bag", ", ".join(r["name"] for r in self.train_set.records())
            held = f"{data['val_fraction']} of the training bags' {data['segment_s']} s segments"
        else:
            kind, train = data["dataset"], str(data["train"])
            held = f"{data['val_fraction']} of the training scenes"
        return {
            "kind": kind,
            "train": train,
            "train_samples": len(self.train_set),
            "val": str(data["val"] or held),
            # Test-set selection is allowed only when asked for, and says so.
            "selected_on": "test set (explicit eval.select_on: test; not an unbiased test result)"
            if self.select_on == "test"
            else "validation set",
        }

    def _checkpoint_metadata(self, weights: str = "raw") -> dict:
        metadata = {
            "training": {
                "config": self.cfg,
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "global_batch": self.global_batch,
                "processes": self.dist.world_size,
                "skipped_steps": self.bad_steps,
                "weights": weights,  # raw or ema
            },
            "dataset": self._dataset_metadata(),
            "eval_metrics": self.last_eval,
            "init": self.init_info,  # {"path", "sha256"} of --init's checkpoint, or None
        }
        if self.cfg["data"]["type"] == "bag":
            metadata["bags"] = self._bag_records()
        return metadata

    def _checkpoint(self) -> None:
        """last.safetensors and state.pt at the current step (rank 0 writes)."""
        if self.dist.is_main:
            save_checkpoint(
                self.model, self.run_dir / "last.safetensors", self._checkpoint_metadata()
            )
        self._save_state()

    # -- one step -----------------------------------------------------------------------
    def _train_step(self, batch: dict) -> dict[str, float] | None:
        """One optimization step; None when skipped (non-finite loss or gradient, no ground
        truth) on any rank, so all ranks skip together."""
        images = batch["image"].to(self.device, non_blocking=True)
        depth = batch["depth"].to(self.device, non_blocking=True)
        inputs = preprocess(images, self.model.preprocessing)
        if self.loss_resolution == "input":
            # The loss lives at the training input resolution; nearest keeps depths real.
            gt, size = F.interpolate(depth, size=inputs.shape[-2:], mode="nearest"), None
        else:
            gt, size = depth, tuple(depth.shape[-2:])
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            output = self.forward(inputs, output_size=size)
        terms = self.loss_fn(output, gt)
        self.optimizer.zero_grad(set_to_none=True)
        has_gt = bool(((gt > 0) & torch.isfinite(gt)).any())
        if not self.dist.all_true(bool(torch.isfinite(terms["total"])) and has_gt, self.device):
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
        if self.ema is not None:
            self.ema.update(self.model)
        result = {name: self.dist.mean(value).item() for name, value in terms.items()}
        result["grad_norm"] = grad_norm.item()
        self._last_visual = (images[0], depth[0], output.depth[0].detach())
        return result

    def _log_images(self) -> None:
        if self.writer is None or not hasattr(self, "_last_visual"):
            return
        image, gt, pred = self._last_visual
        rgb = image.permute(1, 2, 0).cpu().numpy()
        h, w = rgb.shape[:2]
        pred = F.interpolate(pred[None].float(), size=(h, w), mode="bilinear")[0, 0]
        lo, hi = self.model.config.get("min_depth", 0.1), self.model.config.get("max_depth", 10.0)
        panel = depth_panel(rgb, [gt[0].cpu().numpy(), pred.cpu().numpy()], max(lo, 1e-3), hi)
        self.writer.add_image("train/rgb_gt_pred", panel, self.step, dataformats="HWC")

    # -- validation ---------------------------------------------------------------------
    def _evaluate(self, dataset, flip_tta: bool, max_samples=None):
        ev = self.cfg["eval"]
        # channels_last False: the model keeps training, its weights stay as they are.
        backend = TorchBackend(self.model, str(self.device), channels_last=False)
        estimator = DepthEstimator(backend, warmup=False, flip_tta=flip_tta)
        try:
            return evaluate_estimator(
                estimator, dataset, ev["protocol"], "none", ev["min_depth"], ev["max_depth"],
                max_samples, samples=0, progress=self.progress,
            )  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise ValidationError(
                f"evaluation on {dataset.describe()} failed at step {self.step} "
                f"(state saved; fix the data and --resume): {one_line(err)}"
            ) from err
        finally:
            self.model.train()

    def validate(self) -> dict | None:
        """Score raw (and EMA) weights on the selection set; keep the best in best.safetensors."""
        dataset = self.test_set if self.select_on == "test" else self.val_set
        if dataset is None or not self.dist.is_main:
            self.dist.barrier()
            return None
        ev = self.cfg["eval"]
        candidates = {}
        report, _, _ = self._evaluate(dataset, ev["flip_tta"], self.cfg["data"]["val_max_samples"])
        candidates["raw"] = next(iter(report.rows.values()))
        if self.ema is not None:
            with self.ema.applied(self.model):
                report, _, _ = self._evaluate(
                    dataset, ev["flip_tta"], self.cfg["data"]["val_max_samples"]
                )
            candidates["ema"] = next(iter(report.rows.values()))
        for source, metrics in candidates.items():
            if metrics["count"] == 0:
                raise ValidationError(
                    f"evaluation on {dataset.describe()}: no sample has valid ground truth "
                    f"(depth within the protocol's range)"
                )
            suffix = "" if source == "raw" else "_ema"
            for name, value in metrics.items():
                self.writer.add_scalar(f"{self.select_on}/{name}{suffix}", value, self.step)
            self.log.append({"step": self.step, self.select_on: metrics, "weights": source})
        key = ev["select_metric"]

        def score(metrics: dict) -> float:
            return -metrics[key] if key in HIGHER_IS_BETTER else metrics[key]

        source = min(candidates, key=lambda name: score(candidates[name]))
        self.last_eval = {"step": self.step, "weights": source, **candidates[source]}
        if self.best is None or score(candidates[source]) < self.best:
            self.best, self.best_source = score(candidates[source]), source
            metadata = self._checkpoint_metadata(source)
            if source == "ema":
                with self.ema.applied(self.model):
                    save_checkpoint(self.model, self.run_dir / "best.safetensors", metadata)
            else:
                save_checkpoint(self.model, self.run_dir / "best.safetensors", metadata)
        self.dist.barrier()
        return candidates[source]

    def final_test(self) -> dict | None:
        """best.safetensors (or the last weights) on the test set, with flip TTA: test_eval/."""
        if self.test_set is None or not self.dist.is_main:
            return None
        from moa_depth_ros.models.checkpoint import load_checkpoint

        best = self.run_dir / "best.safetensors"
        chosen = best if best.is_file() else self.run_dir / "last.safetensors"
        model, _ = load_checkpoint(chosen, device=str(self.device))
        ev = self.cfg["eval"]
        estimator = DepthEstimator(
            TorchBackend(model, str(self.device)), warmup=False, flip_tta=ev["final_flip_tta"]
        )
        report, samples, masks = evaluate_estimator(
            estimator, self.test_set, ev["protocol"], "none", ev["min_depth"], ev["max_depth"],
            progress=self.progress, source=str(self.cfg["data"]["test"]),
        )  # fmt: skip
        report.settings.update(checkpoint=str(chosen), flip_tta=estimator.flip_tta)
        protocol = report.settings["protocol"]
        write_report(
            report, self.run_dir / "test_eval", samples, masks, protocol["min_depth"],
            protocol["max_depth"],
        )  # fmt: skip
        metrics = next(iter(report.rows.values()))
        self.log.append({"step": self.step, "test_final": metrics, "checkpoint": chosen.name})
        return metrics

    # -- loop ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum  # acted on after the current step, at a consistent state

    def run(self) -> dict:
        run = self.cfg["run"]
        stop_at = min(self.total_steps, run["stop_after_steps"] or self.total_steps)
        previous = {s: signal.signal(s, self._on_signal) for s in EXIT_SIGNAL}
        try:
            return self._loop(stop_at)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.writer is not None:
                self.writer.close()

    def _loop(self, stop_at: int) -> dict:
        run, ev = self.cfg["run"], self.cfg["eval"]
        self.model.train()
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc="train", disable=not self.progress
        )
        data_time = model_time = 0.0
        while self.step < stop_at:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, skip=in_epoch * self.global_batch)
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
                self._after_step(result, bar)
                if self.step % ev["every_steps"] == 0:
                    self._checkpoint()  # state first: a failing validation loses nothing
                    self.validate()
                elif self.step % run["checkpoint_every"] == 0:
                    self._checkpoint()
                # Every rank stops at the same step (torchrun signals them one by one).
                if not self.dist.all_true(self._stop_signal is None, self.device):
                    self._checkpoint()
                    raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, self.step)
                tick = time.perf_counter()
                if self.step >= stop_at:
                    break
        bar.close()
        self._checkpoint()
        if self.step >= self.total_steps and (self.last_eval or {}).get("step") != self.step:
            self.validate()
            self._checkpoint()  # last.safetensors and the state with the final evaluation
        test = self.final_test() if self.step >= self.total_steps else None
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "skipped_steps": self.bad_steps,
            "data_seconds": data_time,
            "model_seconds": model_time,
            "last_eval": self.last_eval,
            "test": test,
        }

    def _after_step(self, result: dict | None, bar: tqdm) -> None:
        run = self.cfg["run"]
        if result is None:
            self.bad_steps += 1
            self.consecutive_bad += 1
            self.log.append({"step": self.step, "skipped": "non-finite loss or gradient, or no GT"})
            if self.consecutive_bad >= run["max_bad_steps"]:
                self._checkpoint()
                raise TrainingAborted(
                    f"{self.consecutive_bad} consecutive steps had a non-finite loss or gradient "
                    f"or no valid ground truth (last at step {self.step}); check the data and lr"
                )
            return
        self.consecutive_bad = 0
        bar.set_postfix(loss=f"{result['total']:.4f}")
        if self.step % run["log_every"] == 0 or self.step == 1:
            lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
            if self.writer is not None:
                for name, value in result.items():
                    self.writer.add_scalar(f"train/{name}", value, self.step)
                for name, value in lrs.items():
                    self.writer.add_scalar(f"lr/{name}", value, self.step)
            self.log.append({"step": self.step, "train": result, "lr": lrs})
        if self.step % run["image_every"] == 0:
            self._log_images()


def _prepare(args: argparse.Namespace) -> tuple[dict, Path]:
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ValueError(f"{run_dir} has no config.yaml: not a run directory to resume")
        config = load_config(run_dir / "config.yaml", args.set)
    else:
        config = load_config(args.config, args.set)
        if args.init:
            config["run"]["init"] = args.init
        run_dir = Path(config["run"]["out_dir"])
    return config, run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moa-depth-train", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", help="a YAML file or a shipped config name (demo_synthetic, ...)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument(
        "--init",
        metavar="CKPT",
        help="start from this .safetensors checkpoint's weights (fine-tuning; same model config)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config (new run) or --resume RUN_DIR")
    if args.init and args.resume:
        parser.error("--init starts a new run; a resumed run continues from its own state")
    trainer = None
    try:
        config, run_dir = _prepare(args)
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
        if trainer.dist.is_main:
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        summary = trainer.run()
    except TrainingInterrupted as stop:
        print(f"moa-depth-train: {stop}; state saved, continue with --resume", file=sys.stderr)
        return EXIT_SIGNAL[stop.signum]
    except (
        ValueError, OSError, RunStateError, CheckpointError, ValidationError, TrainingAborted,
        yaml.YAMLError, BagError,
    ) as err:  # fmt: skip
        print(f"moa-depth-train: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if trainer is not None:
            trainer.dist.close()
    if trainer.dist.is_main:
        print(json.dumps({"run_dir": str(run_dir), **summary}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
