"""moa-depth-bag: inspect, evaluate, play, record and synthesize bags, with or without ROS.

Subcommands: ``info``, ``eval``, ``make-demo`` (pure Python, via rosbags) and ``play``,
``record`` (rclpy; imported only when used). Errors are one line on stderr and exit code 2.
Run ``moa-depth-bag <command> --help`` for the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from moa_depth_ros.anchoring import ANCHOR_FILLS, ANCHOR_MODES
from moa_depth_ros.bags.eval_settings import EvalSettings
from moa_depth_ros.bags.io import STORAGES, BagError, BagReader
from moa_depth_ros.errors import report_interrupted
from moa_depth_ros.evaluation.metrics import ALIGN_MODES
from moa_depth_ros.evaluation.scoring import PROTOCOLS, RESIZE_MODES
from moa_depth_ros.options import PRECISIONS

__all__ = ["main"]

PROG = "moa-depth-bag"
EXIT_ERROR = 2
#: Packages a ROS 2 install (or requirements/ros.txt) provides; play and record need rclpy and
#: the message packages.
ROS_PACKAGES = frozenset({"rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces"})


class CliError(Exception):
    """A failure already described in one line (checkpoint, ROS graph, settings)."""


def _info(args: argparse.Namespace) -> int:
    with BagReader(args.bag) as reader:
        summary = reader.summary()
        checksums = reader.checksums
    width = max((len(t.name) for t in summary.topics), default=5)
    type_width = max((len(t.msgtype) for t in summary.topics), default=4)
    print(f"bag:       {summary.path}")
    print(f"storage:   {summary.storage}")
    if checksums:
        print(f"checksums: {checksums}")
    print(f"duration:  {summary.duration_s:.3f} s")
    if summary.message_count:
        print(f"start:     {summary.start_ns / 1e9:.3f} s  end: {summary.end_ns / 1e9:.3f} s")
    print(f"messages:  {summary.message_count}")
    print(f"topics:    {len(summary.topics)}")
    for topic in summary.topics:
        rate = ""
        if topic.count > 1 and summary.duration_s > 0:
            rate = f"  ~{(topic.count - 1) / summary.duration_s:.1f} Hz"
        print(
            f"  {topic.name:<{width}}  {topic.msgtype:<{type_width}}  {topic.count:>7} msgs{rate}"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    # Imported here: the codec and the estimator are heavy, and info/make-demo do not need them.
    from moa_depth_ros.bags.compare import SCORED_SECTION, compare_bag
    from moa_depth_ros.bags.evaluate import evaluate_bag
    from moa_depth_ros.evaluation.metrics import format_markdown_table
    from moa_depth_ros.evaluation.report import write_report

    checkpoints = args.checkpoint or []
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvalSettings)}
    values["checkpoint"] = checkpoints[0] if len(checkpoints) == 1 else None
    settings = EvalSettings(**values)
    checkpoint_errors: tuple[type[Exception], ...] = ()
    if checkpoints:  # torch + open_clip take seconds to import; only the estimator needs them
        from moa_depth_ros.inference.onnx_format import OnnxError
        from moa_depth_ros.models.checkpoint import CheckpointError

        checkpoint_errors = (CheckpointError, OnnxError)
    progress = not args.no_progress
    try:
        if len(checkpoints) > 1:
            comparison = compare_bag(args.bag, settings, checkpoints, progress)
            report, samples, masks = comparison.report, [], []
            compared = comparison.samples
            failures = [
                f"{label}: {run.report.failure()}"
                for label, run in comparison.runs.items()
                if run.report.failure()
            ]
        else:
            result = evaluate_bag(args.bag, settings, progress=progress)
            report, samples, masks, compared = (
                result.report,
                result.samples,
                result.valid_masks,
                None,
            )
            failures = [failure] if (failure := report.failure()) else []
    except checkpoint_errors as exc:
        raise CliError(str(exc)) from exc
    protocol = settings.scoring_protocol()
    written = write_report(report, args.out, samples, masks, *protocol.scored_range, compared)
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counts.items())
    print(counts)
    print(format_markdown_table(report.rows), end="")
    for label, ms in report.sections.get("time_per_frame_ms", {}).items():
        print(f"{label}: {ms:.1f} ms per frame")
    scored = report.sections.get(SCORED_SECTION) or {"scored": report.settings.get("scored")}
    for label, how in scored.items():
        if how:  # what each model's numbers mean (aligned, anchored, prompted)
            print(f"{label}: {how}")
    print(f"report: {written['markdown']} (+ {', '.join(p.name for p in written.values())})")
    if failures:
        print(f"{PROG}: error: {'; '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


def _play(args: argparse.Namespace) -> int:
    from moa_depth_ros.bags.live import LiveError, play_bag

    try:
        stats = play_bag(
            args.bag,
            rate=args.rate,
            loop=args.loop,
            topics=args.topics,
            qos=args.qos,
            wait_subscribers=args.wait_subscribers,
            delay=args.delay,
            progress=not args.no_progress,
        )
    except LiveError as exc:
        raise CliError(str(exc)) from exc
    print(f"published {stats.published} messages in {stats.passes} pass(es)")
    return 0


def _record(args: argparse.Namespace) -> int:
    from moa_depth_ros.bags.live import LiveError, record_topics

    try:
        stats = record_topics(
            args.topics,
            args.out,
            duration=args.duration,
            max_messages=args.max_messages,
            idle_timeout=args.idle_timeout,
            storage=args.storage,
            progress=not args.no_progress,
        )
    except LiveError as exc:
        raise CliError(str(exc)) from exc
    for topic, count in stats.counts.items():
        if topic in stats.types:
            print(f"  {topic}: {count} ({stats.types[topic]}, {stats.reliability[topic]})")
        else:
            print(f"  {topic}: {count} (never published)")
    print(f"recorded {stats.total} messages to {args.out}")
    if stats.missing:
        print(f"{PROG}: warning: no publisher appeared for: {', '.join(stats.missing)}")
    return 0


def _make_demo(args: argparse.Namespace) -> int:
    from moa_depth_ros.bags.demo import write_demo_bag
    from moa_depth_ros.progress import progress_bar

    with progress_bar(
        total=args.frames, desc="make-demo", unit="frame", disable=args.no_progress
    ) as bar:
        count = write_demo_bag(
            args.out,
            frames=args.frames,
            width=args.width,
            height=args.height,
            rate_hz=args.rate,
            seed=args.seed,
            storage=args.storage,
            rooms=args.rooms,
            on_frame=bar.update,
        )
    rooms = f" in {args.rooms} rooms" if args.rooms > 1 else ""
    print(f"wrote {count} messages ({args.frames} frames{rooms} at {args.rate:g} Hz) to {args.out}")
    return 0


def _add_anchor_arguments(ev: argparse.ArgumentParser, defaults: dict) -> None:
    """The node's metric anchoring, applied offline: one option per node parameter, with the
    node's defaults. Choices and ranges are checked by EvalSettings (not argparse) so a wrong
    value is one error line, like every other setting. The published range the anchored depth
    is clipped to is --min-depth/--max-depth (the protocol's by default)."""
    anchor = ev.add_argument_group("metric anchoring (what the node's anchor_mode would do)")
    anchor.add_argument(
        "--anchor-topic",
        help="metric depth registered to the prediction, 16UC1 mm or 32FC1 m (may be the "
        "ground-truth topic, with --anchor-fraction: a simulated sparse sensor); a relative "
        "model is anchored in inverse depth, a prompt model (Prompt Depth Anything) takes it as "
        "its depth prompt (the fit options do not apply to it; --anchor-fill does)",
    )
    anchor.add_argument(
        "--anchor-fraction",
        type=float,
        help="use this random fraction of the anchor's valid pixels, 0-1 (default: all)",
    )
    anchor.add_argument(
        "--anchor-mode",
        default=defaults["anchor_mode"],
        metavar="{" + ",".join(ANCHOR_MODES) + "}",
        help="fit of the prediction to the anchor; none only fills holes (with --anchor-fill "
        "holes) (default: %(default)s)",
    )
    anchor.add_argument(
        "--anchor-smoothing",
        type=float,
        default=defaults["anchor_smoothing"],
        help="weight of the previous fit, 0-1 (default: %(default)s, as the node)",
    )
    anchor.add_argument(
        "--anchor-fill",
        default=defaults["anchor_fill"],
        metavar="{" + ",".join(ANCHOR_FILLS) + "}",
        help="holes: valid anchor depth replaces the prediction (default: %(default)s)",
    )
    anchor.add_argument(
        "--anchor-min-points",
        type=int,
        default=defaults["anchor_min_points"],
        help="fewest valid anchors for a fit to be used (default: %(default)s, as the node)",
    )
    anchor.add_argument(
        "--anchor-max-residual",
        type=float,
        default=defaults["anchor_max_residual"],
        help="largest median relative residual of a fit that is used (default: %(default)s)",
    )
    anchor.add_argument(
        "--anchor-max-scale-factor",
        type=float,
        default=defaults["anchor_max_scale_factor"],
        help="a used fit's scale is within this factor of 1, its shift within the depth range "
        "(default: %(default)s)",
    )
    anchor.add_argument(
        "--anchor-max-scale-change",
        type=float,
        default=defaults["anchor_max_scale_change"],
        help="a used fit's scale is within this factor of the smoothed fit (default: %(default)s)",
    )
    anchor.add_argument(
        "--anchor-seed",
        type=int,
        default=defaults["anchor_seed"],
        help="seed of the --anchor-fraction subset (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        return sub

    info = command("info", "topics, types, counts and duration of a bag (rosbag2 or ROS 1)")
    info.add_argument("bag", type=Path)
    info.set_defaults(run=_info)

    ev = command("eval", "depth metrics of predictions against ground truth in a bag")
    ev.add_argument("bag", type=Path)
    ev.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    ev.add_argument("--gt-topic", required=True, help="ground-truth depth, 32FC1 or 16UC1")
    ev.add_argument("--camera-info-topic", help="recorded into the report's settings")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="run this .safetensors or .onnx file on the images; repeat it to compare several "
        "models in one report",
    )
    source.add_argument("--pred-topic", help="recorded predictions (a node's depth/image)")
    defaults = {f.name: f.default for f in dataclasses.fields(EvalSettings)}
    ev.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default=defaults["protocol"],
        help="scoring protocol: crop, depth range, non-finite handling (default: %(default)s)",
    )
    ev.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default=defaults["align"],
        help="per-frame alignment to the ground truth before scoring: median and scale_shift "
        "in depth, scale_shift_inverse in inverse depth (what a relative model gets when none "
        "is given and it is not anchored; depth alignments are refused for it)",
    )
    ev.add_argument("--min-depth", type=float, help="m (default: the protocol's, 0.001)")
    ev.add_argument("--max-depth", type=float, help="m (default: the protocol's, 10)")
    ev.add_argument(
        "--slop",
        type=float,
        default=defaults["slop"],
        help="largest prediction/ground-truth header stamp difference, s (default: %(default)s)",
    )
    ev.add_argument(
        "--resize",
        choices=tuple(RESIZE_MODES),
        default=defaults["resize"],
        help="prediction resampling when its size differs from the ground truth",
    )
    ev.add_argument(
        "--allow-aspect-change",
        action="store_true",
        help="also resize predictions of another aspect ratio (an error otherwise)",
    )
    ev.add_argument(
        "--baseline-depth",
        type=float,
        help="also score a constant prediction of this depth (m) for reference",
    )
    ev.add_argument(
        "--samples", type=int, default=defaults["samples"], help="frames in the picture grid"
    )
    ev.add_argument("--device", default=defaults["device"])
    ev.add_argument("--precision", choices=PRECISIONS, default=defaults["precision"])
    _add_anchor_arguments(ev, defaults)
    ev.add_argument("--out", required=True, type=Path, help="report directory")
    ev.set_defaults(run=_eval)

    play = command("play", "publish a bag into the ROS 2 graph (rclpy; raw CDR pass-through)")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="speed factor")
    play.add_argument("--loop", action="store_true")
    play.add_argument("--topics", nargs="+", help="only these topics")
    play.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable")
    play.add_argument(
        "--wait-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S s until every topic has a subscriber",
    )
    play.add_argument(
        "--delay", type=float, default=0.0, metavar="S", help="pause before the first message, s"
    )
    play.set_defaults(run=_play)

    record = command("record", "record live topics to a new bag (rclpy; raw CDR pass-through)")
    record.add_argument("--topics", nargs="+", required=True)
    record.add_argument("--out", required=True, type=Path)
    record.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    record.add_argument("--max-messages", type=int, metavar="N", help="stop after N messages")
    record.add_argument(
        "--idle-timeout", type=float, metavar="S", help="stop S seconds after the last message"
    )
    record.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    record.set_defaults(run=_record)

    demo = command("make-demo", "write a synthetic camera bag with ground-truth depth")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--frames", type=int, default=60)
    demo.add_argument("--width", type=int, default=320)
    demo.add_argument("--height", type=int, default=240)
    demo.add_argument("--rate", type=float, default=10.0, help="Hz")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--rooms", type=int, default=1, help="rooms seed, seed+1, ...; frames split evenly"
    )
    demo.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    demo.set_defaults(run=_make_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 nothing evaluated, 2 error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return report_interrupted(PROG)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in ROS_PACKAGES:
            raise
        message = (
            f"'{args.command}' needs the ROS 2 Python package '{root}': source a ROS 2 install "
            "or pip install -r requirements/ros.txt"
        )
    except (BagError, CliError, ValueError, OSError) as exc:
        message = str(exc)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
