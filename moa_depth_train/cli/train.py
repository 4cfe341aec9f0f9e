"""Train a depth model: moa-depth-train --config C [--set key=value ...] [--resume RUN_DIR]

The run (moa_depth_train.trainer) writes into run.out_dir: config.yaml, metrics.jsonl, tb/,
best.safetensors / last.safetensors, state.pt and test_eval/. Under
``torchrun --nproc_per_node N -m moa_depth_train.cli.train`` it trains with
DistributedDataParallel. ``data.type: bag`` trains on rosbags; ``--init CKPT`` starts from a
checkpoint's weights (fine-tuning).

Config and data errors are one line and exit 2, before anything is written. Ctrl-C / SIGTERM
during training save a resumable state at the current step and exit 130 / 143; Ctrl-C before
training starts (checking data, decoding bags, building the model) exits 130 with one line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import yaml

from moa_depth_ros.bags.io import BagError
from moa_depth_ros.errors import EXIT_ERROR, EXIT_INTERRUPTED, one_line
from moa_depth_ros.models.checkpoint import CheckpointError
from moa_depth_train.bag_dataset import cache_dir_of
from moa_depth_train.config import TrainingConfig, load_config
from moa_depth_train.directories import setting_error
from moa_depth_train.run_state import RunStateError
from moa_depth_train.trainer import (
    CONFIG_FILE,
    Trainer,
    TrainingAborted,
    TrainingInterrupted,
    ValidationError,
)

__all__ = ["main"]

PROG = "moa-depth-train"
#: Exit status after a signal: 128 + its number, as shells report it.
EXIT_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: 143}
#: What the command reports in one line and exit 2 (a user's mistake or bad data).
USER_ERRORS = (
    ValueError, RunStateError, CheckpointError, ValidationError, TrainingAborted,
    yaml.YAMLError, BagError,
)  # fmt: skip


def _report(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)


def _config(args: argparse.Namespace) -> tuple[TrainingConfig, Path]:
    """The run's typed config and directory: a new run's, or the resumed run's own."""
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file():
            raise ValueError(f"{run_dir} has no {CONFIG_FILE}: not a run directory to resume")
        return TrainingConfig.from_dict(load_config(run_dir / CONFIG_FILE, args.set)), run_dir
    raw = load_config(args.config, args.set)
    if args.init:
        raw["run"]["init"] = args.init
    config = TrainingConfig.from_dict(raw)
    return config, Path(config.run.out_dir)


def _os_error_line(err: OSError, config: TrainingConfig | None, run_dir: Path | None) -> str:
    """An OSError about the run directory or the bag cache names that setting."""
    places = [("run.out_dir", run_dir)]
    if config is not None and config.data.type == "bag":
        places.append(("data.cache_dir", cache_dir_of(config.data)))
    for setting, directory in places:
        if directory is None or not err.filename:
            continue
        culprit = Path(err.filename).absolute()
        if culprit == directory.absolute() or directory.absolute() in culprit.parents:
            return one_line(setting_error(setting, directory, err))
    return one_line(err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("give --config (new run) or --resume RUN_DIR")
    if args.init and args.resume:
        parser.error("--init starts a new run; a resumed run continues from its own state")
    config = run_dir = trainer = None
    try:
        config, run_dir = _config(args)
        trainer = Trainer(
            config, run_dir, resume=bool(args.resume), progress=not args.no_progress,
            report=_report,
        )  # fmt: skip
        summary = trainer.run()
    except TrainingInterrupted as stop:
        _report(f"{stop}; state saved, continue with --resume")
        return EXIT_SIGNAL[stop.signum]
    except KeyboardInterrupt:
        left = "the run directory is as it was" if args.resume else "no run was started"
        _report(f"interrupted while setting up (data, bags, model); {left}")
        return EXIT_INTERRUPTED
    except OSError as err:
        _report(f"error: {_os_error_line(err, config, run_dir)}")
        return EXIT_ERROR
    except USER_ERRORS as err:
        _report(f"error: {one_line(err)}")
        return EXIT_ERROR
    finally:
        if trainer is not None:
            trainer.dist.close()
    if trainer.dist.is_main:
        print(json.dumps({"run_dir": str(run_dir), **summary}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
