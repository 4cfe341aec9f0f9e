"""The training loop of ``moa-depth-train``: one run directory, resumable at any step.

The run directory is created when training starts, never before: a run whose data, --init or
settings are refused leaves nothing behind. It then holds config.yaml, metrics.jsonl (one JSON
line per logged step and per validation), tb/ (TensorBoard), best.safetensors /
last.safetensors (the node's checkpoint format, with training and eval metadata), state.pt
(everything an exact resume needs; tensors and plain values only) and, when the config names a
test set, test_eval/ (the report of best.safetensors on it). Under ``torchrun`` it trains with
DistributedDataParallel (moa_depth_train.distributed).

Distillation (``distill.teacher``): the teacher is loaded and checked before any bag is
decoded, labels the training frames (``moa_depth_train.teacher_labels``, cached), and is freed
before the student is built; checkpoints record it, and what validation scored against.

Never loses a run: state is written before every validation; SIGINT / SIGTERM stop at the
current step with the state saved (during a validation or the final test at once: the state
was saved before it), raising TrainingInterrupted.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
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

from moa_depth_ros.errors import one_line
from moa_depth_ros.evaluation.metrics import HIGHER_IS_BETTER
from moa_depth_ros.evaluation.scoring import get_protocol
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.torch_backend import TorchBackend, resolve_device
from moa_depth_ros.models import build_model, preprocess, resolve_model_config
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.progress import progress_bar
from moa_depth_ros.visualize import depth_panel
from moa_depth_train.bag_dataset import BagDataset, cache_dir_of
from moa_depth_train.config import ConfigError, TrainingConfig
from moa_depth_train.data_selection import DataSplits, check_data_dirs, select_datasets
from moa_depth_train.directories import check_writable_dir, make_dir
from moa_depth_train.distributed import Distributed, EpochSampler
from moa_depth_train.ema import ModelEMA
from moa_depth_train.evaluate import evaluate_estimator, write_dataset_report
from moa_depth_train.init_weights import check_init, load_init_weights
from moa_depth_train.losses import build_loss
from moa_depth_train.run_state import (
    MetricsLog,
    RunStateError,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from moa_depth_train.schedule import LrSchedule, lr_schedule
from moa_depth_train.teacher_labels import TeacherLabeler

__all__ = ["STOP_SIGNALS", "Trainer", "TrainingAborted", "TrainingInterrupted", "ValidationError"]

#: The signals that stop a run with its state saved.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONFIG_FILE = "config.yaml"
OUT_DIR_SETTING = "run.out_dir"


class TrainingAborted(RuntimeError):  # noqa: N818 (it is an error; the name says what happened)
    """Too many consecutive steps with a non-finite loss or gradient, or without ground truth."""


class TrainingInterrupted(BaseException):  # noqa: N818
    """SIGINT / SIGTERM: the state was saved at the current step. A BaseException, like
    KeyboardInterrupt, so no ``except Exception`` on the way swallows the stop."""

    def __init__(self, signum: int, step: int, during: str = ""):
        where = f" during {during}" if during else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}{where}")
        self.signum, self.step = signum, step


class ValidationError(RuntimeError):
    """Validation failed; the state of the run was saved before it."""


class Trainer:
    """One run: data, model, optimizer and loop, from a typed config; ``run()`` trains."""

    def __init__(
        self,
        config: TrainingConfig,
        run_dir: Path,
        resume: bool = False,
        progress: bool = True,
        report: Callable[[str], None] | None = None,
    ):
        self.cfg, self.run_dir = config, Path(run_dir)
        self.dist = Distributed.from_environment()
        self.progress = progress and self.dist.is_main
        # Everything that can be refused is checked before anything slow or written.
        check_writable_dir(self.run_dir, OUT_DIR_SETTING)
        check_data_dirs(config.data)
        self._check_model_and_loss()
        state = load_state(self.run_dir) if resume else None
        fresh = state is None
        if fresh:
            self._seed()
        self.device = self._open_device()
        if fresh and config.run.init:
            check_init(config.model, config.run.init)  # before the bags are decoded
        report = report if self.dist.is_main else None
        self.teacher = self._open_teacher(fresh, state, report) if config.distill.teacher else None
        self.data = self._load_data(report)
        if self.teacher is not None:
            self.teacher.release()  # labelling is done: its memory is the student's
            if report is not None:
                report(f"distill: training on the labels of {self.teacher.describe()}; validation "
                       f"scores against {self._validation_ground_truth()}")  # fmt: skip
        self.model, self.init_info = self._build_model(fresh)
        self.global_batch, self.steps_per_epoch, self.total_steps = self._plan_steps()
        self.sampler, self.loader = self._make_loader()
        self.optimizer, self.trainable_params = self._make_optimizer()
        self.schedule = LrSchedule(
            self.optimizer, lr_schedule(config.optim, self.total_steps, self.steps_per_epoch)
        )
        self.amp_dtype, self.scaler = self._make_precision()
        self.loss_fn = build_loss(config.loss, self.model.bin_centers)
        self.loss_resolution = self.loss_fn.resolution
        self.ema = ModelEMA(self.model, config.optim.ema_decay) if config.optim.ema_decay else None
        self.forward = self._wrap_for_processes()
        self.step, self.bad_steps, self.consecutive_bad = 0, 0, 0
        self.best: float | None = None
        self.last_eval: dict | None = None
        self.best_source = ""
        self.log = MetricsLog(self.run_dir, enabled=self.dist.is_main)
        self.writer: SummaryWriter | None = None
        self._stop_signal: int | None = None
        #: (image, ground truth, prediction) of the latest step, for TensorBoard's picture.
        self._last_visual: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._stoppable_now = ""  # what runs while a signal stops the run at once
        if state is not None:
            self._load_state(state)

    # -- setup steps --------------------------------------------------------------------
    def _check_model_and_loss(self) -> None:
        """``model`` and ``loss`` are checked by the model registry and the loss; ask them
        now, before any data is read or the model built."""
        try:
            resolve_model_config(self.cfg.model)
        except ValueError as err:
            raise ConfigError(f"model: {one_line(err)}") from err
        build_loss(self.cfg.loss, None)

    def _seed(self) -> None:
        np.random.seed(self.cfg.run.seed)
        torch.manual_seed(self.cfg.run.seed + self.dist.rank)

    def _open_device(self) -> torch.device:
        device = self.dist.device(resolve_device(self.cfg.run.device))
        self.dist.init(device)
        return device

    def _label_range(self) -> tuple[float, float]:
        """The depth range of a teacher's labels: the student's (what it can predict), else
        the range validation scores in."""
        model = resolve_model_config(self.cfg.model)
        if model.get("min_depth") is not None and model.get("max_depth") is not None:
            return float(model["min_depth"]), float(model["max_depth"])
        ev = self.cfg.eval
        protocol = get_protocol(ev.protocol).with_range(ev.min_depth, ev.max_depth)
        return protocol.scored_range

    def _open_teacher(
        self, fresh: bool, state: dict | None, report: Callable[[str], None] | None
    ) -> TeacherLabeler:
        """The teacher, checked before any bag is decoded: its file (not --init's, and on
        resume the one the run started with) and, in the process that labels, its model."""
        data = self.cfg.data
        labeler = TeacherLabeler(
            self.cfg.distill, data.anchor_topic, self._label_range(), cache_dir_of(data),
            init=self.cfg.run.init if fresh else None, report=report,
        )  # fmt: skip
        started_with = (state or {}).get("teacher_sha256")
        if started_with and started_with != labeler.file.sha256:
            raise RunStateError(
                f"distill.teacher '{labeler.file.path}' is not the teacher this run started with "
                f"(SHA-256 {labeler.file.sha256[:12]}... vs {started_with[:12]}...): its labels "
                "would differ; start a new run"
            )
        if self.dist.is_main:
            labeler.load()  # rank 0 labels; the others read its labels from the cache
        return labeler

    def _validation_ground_truth(self) -> str:
        """What validation and the final test score against (checkpoint, TensorBoard, log)."""
        data = self.cfg.data
        if data.type != "bag":
            return f"the {data.dataset} ground truth"
        if data.depth_topic is not None:
            return f"depth topic {data.depth_topic}"
        return f"the labels of {self.teacher.describe()} (the bags have no depth topic)"

    def _load_data(self, report: Callable[[str], None] | None) -> DataSplits:
        """Data before the model: a bad bag or list is reported before a large model is
        built. With several processes rank 0 decodes bags into the cache (and a teacher
        labels them) first; the others then map it."""
        bags = self.cfg.data.type == "bag"
        if bags and not self.dist.is_main:
            self.dist.barrier()
        data = select_datasets(
            self.cfg.data, self.cfg.run.seed, self.progress, report, self.teacher
        )
        if bags and self.dist.is_main:
            self.dist.barrier()
        return data

    @property
    def train_set(self) -> Any:
        return self.data.train

    @property
    def val_set(self) -> Any:
        return self.data.val

    @property
    def test_set(self) -> Any:
        return self.data.test

    def _build_model(self, fresh: bool) -> tuple[torch.nn.Module, dict[str, str] | None]:
        """The network, with --init's weights on a new run. On resume every tensor comes from
        state.pt (and --init's record from it): no pretrained download needed."""
        init = self.cfg.run.init if fresh else None
        model = build_model(self.cfg.model, load_pretrained=fresh and not init)
        init_info = load_init_weights(model, init) if init else None
        return model.to(self.device), init_info

    def _plan_steps(self) -> tuple[int, int, int]:
        """(global batch, steps per epoch, total steps)."""
        optim = self.cfg.optim
        global_batch = optim.batch_size * self.dist.world_size
        steps_per_epoch = len(self.train_set) // global_batch
        if steps_per_epoch == 0:
            raise ValueError(
                f"global batch {global_batch} is larger than the {len(self.train_set)} "
                "training samples"
            )
        return global_batch, steps_per_epoch, optim.max_steps or optim.epochs * steps_per_epoch

    def _make_loader(self) -> tuple[EpochSampler, DataLoader]:
        sampler = EpochSampler(
            len(self.train_set), self.cfg.run.seed, self.dist.rank, self.dist.world_size
        )
        workers = self.cfg.data.num_workers
        loader = DataLoader(
            self.train_set,
            batch_size=self.cfg.optim.batch_size,
            sampler=sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            # Workers stay up between epochs: the sampler carries the epoch (see rgbd_dataset).
            persistent_workers=workers > 0,
        )
        return sampler, loader

    def _make_optimizer(self) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
        optim = self.cfg.optim
        groups = self.model.trainable_parameter_groups()
        lrs = {"new_modules": optim.lr_new, "backbone_blocks": optim.lr_backbone}
        optimizer = torch.optim.AdamW(
            [{"params": p, "lr": lrs[name], "name": name} for name, p in groups.items() if p],
            weight_decay=optim.weight_decay,
        )
        return optimizer, [p for group in groups.values() for p in group]

    def _make_precision(self) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
        """Autocast dtype (None: fp32) and the fp16 gradient scaler; CPU always trains fp32."""
        amp = self.cfg.optim.amp if self.device.type == "cuda" else "none"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        return dtype, torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def _wrap_for_processes(self) -> torch.nn.Module:
        if not self.dist.enabled:
            return self.model
        return DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # Heads whose loss weight is 0 (SPACE-CLIP's third auxiliary head) get no
            # gradient; DDP must not wait for them.
            find_unused_parameters=True,
        )

    # -- state --------------------------------------------------------------------------
    def _load_state(self, state: dict) -> None:
        if state["step"] > self.total_steps:
            raise RunStateError(
                f"{self.run_dir / 'state.pt'}: the run is at step {state['step']} but the "
                f"schedule now has only {self.total_steps} steps; resume with at least that many"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.schedule.apply(self.step)  # the rate is the step's (older states' "scheduler" unused)
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
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "step": self.step,
                "bad_steps": self.bad_steps,
                "best": self.best,
                "best_source": self.best_source,
                "last_eval": self.last_eval,
                "rng": rngs,
                "init": self.init_info,
                "teacher_sha256": self.teacher.file.sha256 if self.teacher else None,
            },
        )

    def _bag_records(self) -> list[dict]:
        """Every bag trained, validated or tested on: name, bytes, SHA-256, pair counts."""
        records = []
        for role, dataset in self.data.named():
            if isinstance(dataset, BagDataset):
                known = {r["sha256"] for r in records}
                records += [
                    {"role": role, **r} for r in dataset.records() if r["sha256"] not in known
                ]
        return records

    def _dataset_metadata(self) -> dict:
        data = self.cfg.data
        if data.type == "bag":
            kind, train = "bag", ", ".join(r["name"] for r in self.train_set.records())
            held = f"{data.val_fraction} of the training bags' {data.segment_s} s segments"
            val = ", ".join(data.val) if data.val else held
        else:
            kind, train = data.dataset, str(data.train)
            val = data.val or f"{data.val_fraction} of the training scenes"
        labels = "ground truth"
        if data.type == "bag":
            labels = f"depth topic {data.depth_topic}"
            if self.teacher is not None:
                labels = f"the labels of {self.teacher.describe()}"
        return {
            "kind": kind,
            "train": train,
            "train_samples": len(self.train_set),
            "train_labels": labels,
            "val": str(val),
            "val_ground_truth": self._validation_ground_truth(),
            # Test-set selection is allowed only when asked for, and says so.
            "selected_on": "test set (explicit eval.select_on: test; not an unbiased test result)"
            if self.cfg.eval.select_on == "test"
            else "validation set",
        }

    def _checkpoint_metadata(self, weights: str = "raw") -> dict:
        metadata = {
            "training": {
                "config": self.cfg.to_dict(),
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
        if self.cfg.data.type == "bag":
            metadata["bags"] = self._bag_records()
        if self.teacher is not None:
            metadata["distill"] = {
                **self.teacher.record(),
                "validation_ground_truth": self._validation_ground_truth(),
            }
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
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_params, self.cfg.optim.grad_clip)
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
        if self.writer is None or self._last_visual is None:
            return
        image, gt, pred = self._last_visual
        rgb = image.permute(1, 2, 0).cpu().numpy()
        h, w = rgb.shape[:2]
        pred = F.interpolate(pred[None].float(), size=(h, w), mode="bilinear")[0, 0]
        lo, hi = self.model.config.get("min_depth", 0.1), self.model.config.get("max_depth", 10.0)
        panel = depth_panel(rgb, [gt[0].cpu().numpy(), pred.cpu().numpy()], max(lo, 1e-3), hi)
        self.writer.add_image("train/rgb_gt_pred", panel, self.step, dataformats="HWC")

    # -- validation ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _stoppable(self, during: str) -> Iterator[None]:
        """A stretch (validation, the final test) that a signal ends at once rather than
        after it: the state was saved before it, and a validation can take minutes."""
        if self._stop_signal is not None:
            raise TrainingInterrupted(self._stop_signal, self.step, during)
        self._stoppable_now = during
        try:
            yield
        finally:
            self._stoppable_now = ""

    def _evaluate(self, dataset: Any, flip_tta: bool, max_samples: int | None = None):
        ev = self.cfg.eval
        # channels_last False: the model keeps training, its weights stay as they are.
        backend = TorchBackend(self.model, str(self.device), channels_last=False)
        estimator = DepthEstimator(backend, warmup=False, flip_tta=flip_tta)
        try:
            with self._stoppable("validation"):
                return evaluate_estimator(
                    estimator, dataset, ev.protocol, "none", ev.min_depth, ev.max_depth,
                    max_samples, samples=0, progress=self.progress,
                )  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise ValidationError(
                f"evaluation on {dataset.describe()} failed at step {self.step} "
                f"(state saved; fix the data and --resume): {one_line(err)}"
            ) from err
        finally:
            self.model.train()

    def _score(self, metrics: dict) -> float:
        """The selection metric, lower is better."""
        key = self.cfg.eval.select_metric
        return -metrics[key] if key in HIGHER_IS_BETTER else metrics[key]

    def validate(self) -> dict | None:
        """Score raw (and EMA) weights on the selection set; keep the best in best.safetensors."""
        select_on = self.cfg.eval.select_on
        dataset = self.test_set if select_on == "test" else self.val_set
        if dataset is None or not self.dist.is_main:
            self.dist.barrier()
            return None
        flip, most = self.cfg.eval.flip_tta, self.cfg.data.val_max_samples
        candidates = {}
        report, _, _ = self._evaluate(dataset, flip, most)
        candidates["raw"] = next(iter(report.rows.values()))
        if self.ema is not None:
            with self.ema.applied(self.model):
                report, _, _ = self._evaluate(dataset, flip, most)
            candidates["ema"] = next(iter(report.rows.values()))
        for source, metrics in candidates.items():
            if metrics["count"] == 0:
                raise ValidationError(
                    f"evaluation on {dataset.describe()}: no sample has valid ground truth "
                    f"(depth within the protocol's range)"
                )
            suffix = "" if source == "raw" else "_ema"
            for name, value in metrics.items() if self.writer is not None else ():
                self.writer.add_scalar(f"{select_on}/{name}{suffix}", value, self.step)
            self.log.append({"step": self.step, select_on: metrics, "weights": source})
        source = min(candidates, key=lambda name: self._score(candidates[name]))
        self.last_eval = {"step": self.step, "weights": source, **candidates[source]}
        if self.best is None or self._score(candidates[source]) < self.best:
            self.best, self.best_source = self._score(candidates[source]), source
            metadata = self._checkpoint_metadata(source)
            applied = self.ema.applied(self.model) if source == "ema" else contextlib.nullcontext()
            with applied:
                save_checkpoint(self.model, self.run_dir / "best.safetensors", metadata)
        self.dist.barrier()
        return candidates[source]

    def final_test(self) -> dict | None:
        """best.safetensors (or the last weights) on the test set, with flip TTA: test_eval/."""
        if self.test_set is None or not self.dist.is_main:
            return None
        best = self.run_dir / "best.safetensors"
        chosen = best if best.is_file() else self.run_dir / "last.safetensors"
        model, _ = load_checkpoint(chosen, device=str(self.device))
        estimator = DepthEstimator(
            TorchBackend(model, str(self.device)),
            warmup=False,
            flip_tta=self.cfg.eval.final_flip_tta,
        )
        ev = self.cfg.eval
        with self._stoppable("the final test"):
            report, samples, masks = evaluate_estimator(
                estimator, self.test_set, ev.protocol, "none", ev.min_depth, ev.max_depth,
                progress=self.progress, source=str(self.cfg.data.test),
            )  # fmt: skip
        report.settings.update(checkpoint=str(chosen), flip_tta=estimator.flip_tta)
        write_dataset_report(report, self.run_dir / "test_eval", samples, masks)
        metrics = next(iter(report.rows.values()))
        self.log.append({"step": self.step, "test_final": metrics, "checkpoint": chosen.name})
        return metrics

    # -- loop ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum  # acted on after the current step, at a consistent state
        if self._stoppable_now:
            raise TrainingInterrupted(signum, self.step, self._stoppable_now)

    def _start(self) -> None:
        """The run directory, its config.yaml and TensorBoard writer: only now, when the data,
        the model and the state are all in place (rank 0 writes)."""
        if not self.dist.is_main:
            return
        make_dir(self.run_dir, OUT_DIR_SETTING)
        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        (self.run_dir / CONFIG_FILE).write_text(text)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        lines = [f"validation and the final test score against {self._validation_ground_truth()}"]
        if self.teacher is not None:
            record = self.teacher.record()["teacher"]
            lines.insert(0, "training labels: " + ", ".join(f"{k} {v}" for k, v in record.items()))
        self.writer.add_text("data/ground_truth", "\n\n".join(lines), self.step)

    def run(self) -> dict:
        """Train to the end of the schedule (or run.stop_after_steps); the run's summary."""
        stop_at = min(self.total_steps, self.cfg.run.stop_after_steps or self.total_steps)
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            self._start()
            return self._loop(stop_at)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self.writer is not None:
                self.writer.close()

    def _stop_if_asked(self) -> None:
        # Every rank stops at the same step (torchrun signals them one by one).
        if not self.dist.all_true(self._stop_signal is None, self.device):
            self._checkpoint()
            raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, self.step)

    def _loop(self, stop_at: int) -> dict:
        every = self.cfg.eval.every_steps
        self.model.train()
        bar = progress_bar(
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
                self.step += 1
                self.schedule.apply(self.step)  # skipped or not: the rate follows the step
                t_model = time.perf_counter()
                data_time += t_data - tick
                model_time += t_model - t_data
                bar.update(1)
                self._after_step(result, bar)
                if self.step % every == 0:
                    self._checkpoint()  # state first: a failing validation loses nothing
                    self.validate()
                elif self.step % self.cfg.run.checkpoint_every == 0:
                    self._checkpoint()
                self._stop_if_asked()
                tick = time.perf_counter()
                if self.step >= stop_at:
                    break
        bar.close()
        self._checkpoint()
        if self.step >= self.total_steps and (self.last_eval or {}).get("step") != self.step:
            self.validate()
            self._checkpoint()  # last.safetensors and the state with the final evaluation
        test = self.final_test() if self.step >= self.total_steps else None
        self._stop_if_asked()  # a signal while files were written at the end
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
        run = self.cfg.run
        if result is None:
            self.bad_steps += 1
            self.consecutive_bad += 1
            self.log.append({"step": self.step, "skipped": "non-finite loss or gradient, or no GT"})
            if self.consecutive_bad >= run.max_bad_steps:
                self._checkpoint()
                raise TrainingAborted(
                    f"{self.consecutive_bad} consecutive steps had a non-finite loss or gradient "
                    f"or no valid ground truth (last at step {self.step}); check the data and lr"
                )
            return
        self.consecutive_bad = 0
        bar.set_postfix(loss=f"{result['total']:.4f}")
        if self.step % run.log_every == 0 or self.step == 1:
            lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
            if self.writer is not None:
                for name, value in result.items():
                    self.writer.add_scalar(f"train/{name}", value, self.step)
                for name, value in lrs.items():
                    self.writer.add_scalar(f"lr/{name}", value, self.step)
            self.log.append({"step": self.step, "train": result, "lr": lrs})
        if self.step % run.image_every == 0:
            self._log_images()
