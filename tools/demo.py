"""``make demo``: the whole job on synthetic data, offline, with the real node in a ROS graph.

Stages (each prints its progress; a failure exits 1 naming the stage):

1. data     synthetic RGB-D training frames (``moa_depth_ros.synthetic``), reused when present
2. train    a short ``demo_synthetic`` training run, reused when its checkpoint exists
3. bag      a held-out synthetic camera sequence as a bag (``moa-depth-bag make-demo``)
4. node     ``python -m moa_depth_ros.node`` with the checkpoint, on a private ROS domain
5. replay   ``moa-depth-bag record`` (node outputs + ground truth + images) while
            ``moa-depth-bag play`` feeds the bag to the node
6. eval     ``moa-depth-bag eval --pred-topic`` on the recording, with a constant
            median-training-depth baseline for reference
7. cloud    one recorded ``depth/points`` cloud as a coloured PLY

Outputs go to ``demo_out/`` (report.md with pictures, report.json, cloud.ply, bags/, logs/).
``make demo`` runs it from the repository; the packages it drives work installed too.
``--quick`` shrinks the stages for CI (smaller images, a shorter bag; the same training).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: tools/ and the packages

from tools.ros_graph import private_graph_environment  # noqa: E402

CAMERA_IMAGE = "/camera/image_raw"
CAMERA_INFO = "/camera/camera_info"
GROUND_TRUTH = "/camera/depth/ground_truth"
NODE_OUTPUTS = ("/depth/image", "/depth/camera_info", "/depth/points")
RECORDED = (*NODE_OUTPUTS, CAMERA_IMAGE, CAMERA_INFO, GROUND_TRUTH)
NODE_NAME = "depth_node"
#: How long the node may take to load its model, and the recorder to find the node (s).
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Mode:
    """Sizes of one demo flavour."""

    name: str
    train_frames: int
    data_size: tuple[int, int]  # width, height of the training frames
    train_overrides: tuple[str, ...]  # training --set overrides on demo_synthetic.yaml
    bag_frames: int
    bag_rooms: int  # several held-out rooms: one room can flatter a constant guess
    bag_size: tuple[int, int]
    bag_rate_hz: float
    play_rate: float  # replay speed factor: slow enough for the node to keep up on 2 cores


FULL = Mode(
    name="demo_synthetic",
    train_frames=400,
    data_size=(160, 120),  # the model sees 96x128: larger frames only cost decode time
    train_overrides=(),  # moa_depth_train/configs/demo_synthetic.yaml as it is
    bag_frames=60,
    bag_rooms=4,
    bag_size=(320, 240),
    bag_rate_hz=10.0,
    play_rate=0.5,
)
QUICK = Mode(
    name="demo_synthetic_quick",
    train_frames=400,
    data_size=(160, 120),
    train_overrides=("run.image_every=100000",),  # the training itself is the full one
    bag_frames=16,
    bag_rooms=4,
    bag_size=(160, 120),
    bag_rate_hz=10.0,
    play_rate=0.5,
)


class StageError(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"demo failed at stage '{stage}': {reason}")
        self.stage = stage


class Demo:
    """Runs the stages in order; holds paths, the ROS environment and child processes."""

    def __init__(self, mode: Mode, work: Path, out: Path, seed: int, retrain: bool) -> None:
        self.mode = mode
        self.work = work
        self.out = out
        self.seed = seed
        self.retrain = retrain
        self.data_dir = work / "data" / mode.name.replace("demo_", "")
        self.run_dir = work / "runs" / mode.name
        self.bags = out / "bags"
        self.logs = out / "logs"
        self.started = time.monotonic()
        self.stage_number = 0
        self.children: list[subprocess.Popen] = []
        self.env = self._environment()

    # ------------------------------------------------------------------ plumbing

    def _environment(self) -> dict[str, str]:
        # A private graph: nothing else on this machine or network sees the demo. Training,
        # node, player and recorder share the cores: torch's OpenMP threads must sleep, not
        # spin, while they wait (spinning made training steps 10x slower).
        return private_graph_environment(
            self.logs / "ros", pythonpath=[REPO], OMP_WAIT_POLICY="PASSIVE"
        )

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.stage_number += 1
        begun = time.monotonic()
        print(f"\n==> [{self.stage_number}/7] {name}: {what}", flush=True)
        try:
            yield
        except StageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure names its stage
            raise StageError(name, " ".join(f"{type(exc).__name__}: {exc}".split())) from exc
        print(
            f"    {name} done in {time.monotonic() - begun:.1f} s "
            f"(total {time.monotonic() - self.started:.1f} s)",
            flush=True,
        )

    def python(self, stage: str, args: Sequence[str], timeout: float) -> None:
        """Run ``python <args>`` in the foreground, its output (progress bars) shown live."""
        command = [sys.executable, *args]
        try:
            result = subprocess.run(command, cwd=REPO, env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StageError(stage, f"timed out after {timeout:.0f} s: {' '.join(args)}") from None
        if result.returncode != 0:
            raise StageError(stage, f"exit code {result.returncode}: {' '.join(args)}")

    def spawn(self, args: Sequence[str], log_name: str | None = None) -> subprocess.Popen:
        """Start ``python <args>`` in the background (output to a log file or the console)."""
        log = open(self.logs / log_name, "w") if log_name else None  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        self.children.append(process)
        return process

    def stop_children(self) -> None:
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)

    def log_tail(self, log_name: str, lines: int = 15) -> str:
        path = self.logs / log_name
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    # ------------------------------------------------------------------ stages

    def make_data(self) -> Path:
        train_list = self.data_dir / "train_files.txt"
        with self.stage("data", f"synthetic training frames in {self.data_dir}"):
            if train_list.is_file() and train_list.stat().st_size:
                print(f"    reusing {train_list}")
            else:
                width, height = self.mode.data_size
                self.python(
                    "data",
                    [
                        "-m",
                        "moa_depth_ros.cli.synthetic",
                        "--out",
                        str(self.data_dir),
                        "--frames",
                        str(self.mode.train_frames),
                        "--width",
                        str(width),
                        "--height",
                        str(height),
                        "--seed",
                        str(self.seed),
                    ],
                    timeout=600,
                )
        return train_list

    def train(self) -> Path:
        checkpoint = self.run_dir / "best.safetensors"
        with self.stage("train", f"MoA-DepthCLIP ({self.mode.name}) into {self.run_dir}"):
            if checkpoint.is_file() and not self.retrain:
                print(f"    reusing {checkpoint} (--retrain to train again)")
                return checkpoint
            if self.retrain and self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            overrides = [
                f"run.out_dir={self.run_dir}",
                f"data.train={self.data_dir / 'train_files.txt'}",
                f"data.val={self.data_dir / 'test_files.txt'}",
                *self.mode.train_overrides,
            ]
            args = ["-m", "moa_depth_train.cli.train", "--config", "demo_synthetic"]
            for override in overrides:
                args += ["--set", override]
            self.python("train", args, timeout=900)
            if not checkpoint.is_file():
                checkpoint = self.run_dir / "last.safetensors"
            if not checkpoint.is_file():
                raise StageError("train", f"no checkpoint written in {self.run_dir}")
        return checkpoint

    def make_bag(self) -> Path:
        bag = self.bags / "input"
        width, height = self.mode.bag_size
        with self.stage("bag", f"held-out synthetic camera sequence -> {bag}"):
            # Rooms no training frame shows: render_sequence draws a room from its seed
            # alone, the training set from (seed, room index).
            self.python(
                "bag",
                [
                    "-m",
                    "moa_depth_ros.cli.bag",
                    "make-demo",
                    "--out",
                    str(bag),
                    "--frames",
                    str(self.mode.bag_frames),
                    "--width",
                    str(width),
                    "--height",
                    str(height),
                    "--rate",
                    str(self.mode.bag_rate_hz),
                    "--seed",
                    str(self.seed + 1000),
                    "--rooms",
                    str(self.mode.bag_rooms),
                ],
                timeout=300,
            )
        return bag

    def start_node(self, checkpoint: Path) -> subprocess.Popen:
        with self.stage("node", f"depth_node with {checkpoint.name} (log: logs/node.log)"):
            node = self.spawn(
                [
                    "-m",
                    "moa_depth_ros.node",
                    "--ros-args",
                    "-p",
                    f"checkpoint:={checkpoint}",
                    "-p",
                    "device:=cpu",
                    # Replay: reliable input, so frames are not dropped by the transport.
                    "-p",
                    "input_qos_reliability:=reliable",
                    "-p",
                    "input_qos_depth:=5",
                    # A deep reliable output history: a recorder starved of CPU for a moment
                    # must still receive every message (depth 1 overwrites unacknowledged ones).
                    "-p",
                    "output_qos_depth:=20",
                    "-r",
                    f"image:={CAMERA_IMAGE}",
                    "-r",
                    f"camera_info:={CAMERA_INFO}",
                ],
                log_name="node.log",
            )
            # Subscribed to the camera = configured (model loaded) and active.
            self.wait_for_subscription("node", CAMERA_IMAGE, NODE_NAME, node, "node.log")
        return node

    @contextmanager
    def graph_probe(self) -> Iterator[Any]:
        """An rclpy node of this process on the demo's private graph, to watch the others."""
        os.environ.update(self.env)
        import rclpy
        from rclpy.context import Context

        context = Context()
        rclpy.init(context=context)
        probe = rclpy.create_node("moa_depth_demo_probe", context=context)
        try:
            yield probe
        finally:
            probe.destroy_node()
            context.shutdown()

    def wait_for_subscription(
        self, stage: str, topic: str, node_name: str, process: subprocess.Popen, log: str
    ) -> None:
        """Until ``node_name`` subscribes to ``topic``; fails when ``process`` exits first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self.graph_probe() as probe:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise StageError(
                        stage, f"exited with {process.returncode}:\n{self.log_tail(log)}"
                    )
                subscribers = probe.get_subscriptions_info_by_topic(topic)
                if any(info.node_name == node_name for info in subscribers):
                    print(f"    {node_name} subscribed to {topic}")
                    return
                time.sleep(0.2)
        raise StageError(
            stage,
            f"{node_name} did not subscribe to {topic} within {STARTUP_TIMEOUT_S:.0f} s:\n"
            + self.log_tail(log),
        )

    def replay(self, bag: Path) -> Path:
        recording = self.bags / "recorded"
        duration = self.mode.bag_frames / self.mode.bag_rate_hz / self.mode.play_rate
        with self.stage("replay", f"play {bag.name} at x{self.mode.play_rate:g}, record outputs"):
            recorder = self.spawn(
                [
                    "-m",
                    "moa_depth_ros.cli.bag",
                    "record",
                    "--topics",
                    *RECORDED,
                    "--out",
                    str(recording),
                    "--idle-timeout",
                    "4",
                    "--duration",
                    str(round(duration + 120)),
                    "--no-progress",
                ],
                log_name="record.log",
            )
            # The node skips frames nobody subscribes to: the recorder must be listening first.
            for topic in NODE_OUTPUTS:
                self.wait_for_subscription(
                    "replay", topic, "moa_depth_bag_recorder", recorder, "record.log"
                )
            self.python(
                "replay",
                [
                    "-m",
                    "moa_depth_ros.cli.bag",
                    "play",
                    str(bag),
                    "--rate",
                    str(self.mode.play_rate),
                    "--qos",
                    "reliable",
                    "--wait-subscribers",
                    "30",
                    "--delay",
                    "1.5",
                ],
                timeout=duration + 120,
            )
            try:
                code = recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise StageError("replay", "the recorder did not stop") from None
            print(self.log_tail("record.log", lines=len(RECORDED) + 2))
            if code != 0:
                raise StageError("replay", f"record exited with {code}")
        return recording

    def evaluate(self, recording: Path, baseline_depth: float) -> dict:
        with self.stage("eval", "recorded depth/image against the ground truth"):
            self.python(
                "eval",
                [
                    "-m",
                    "moa_depth_ros.cli.bag",
                    "eval",
                    str(recording),
                    "--image-topic",
                    CAMERA_IMAGE,
                    "--gt-topic",
                    GROUND_TRUTH,
                    "--camera-info-topic",
                    "/depth/camera_info",
                    "--pred-topic",
                    "/depth/image",
                    "--baseline-depth",
                    f"{baseline_depth:.3f}",
                    "--out",
                    str(self.out),
                ],
                timeout=300,
            )
        return json.loads((self.out / "report.json").read_text())

    def write_cloud(self, recording: Path) -> Path:
        from moa_depth_ros.bags.io import BagReader
        from moa_depth_ros.msgs.pointcloud import cloud_arrays
        from moa_depth_ros.ply import write_ply

        path = self.out / "cloud.ply"
        with self.stage("cloud", f"one recorded depth/points cloud -> {path}"):
            with BagReader(recording) as reader:
                count = reader.topics().get("/depth/points")
                if count is None or count.count == 0:
                    raise StageError("cloud", "the recording has no /depth/points message")
                middle = count.count // 2
                message = next(m for m in reader.messages(["/depth/points"]) if m.index == middle)
                xyz, rgb = cloud_arrays(reader.decode(message))
            vertices = write_ply(path, xyz, rgb)
            print(
                f"    {vertices} points (NaN dropped), colours {'yes' if rgb is not None else 'no'}"
            )
        return path


def median_training_depth(train_list: Path) -> float:
    """Median valid ground-truth depth (m) over the training frames: the constant baseline."""
    import cv2

    from moa_depth_train.datasets import read_list_file

    values = []
    for _, depth_path, _ in read_list_file(train_list, train_list.parent):
        millimetres = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        values.append(millimetres[millimetres > 0])
    return float(np.median(np.concatenate(values))) / 1000.0


def _summary(report: dict, baseline_depth: float) -> str:
    overall = report["overall"]
    baseline = next(iter(report["references"].values()))
    better = (
        overall["abs_rel"] < baseline["abs_rel"]
        and overall["rmse"] < baseline["rmse"]
        and overall["delta1"] > baseline["delta1"]
    )
    counts = report["counts"]
    return (
        f"evaluated {counts['evaluated']} of {counts['ground_truth']} ground-truth frames "
        f"({counts['unmatched_ground_truth']} without a prediction)\n"
        f"model:    abs_rel {overall['abs_rel']:.3f}  rmse {overall['rmse']:.3f} m  "
        f"delta1 {overall['delta1']:.3f}\n"
        f"baseline: abs_rel {baseline['abs_rel']:.3f}  rmse {baseline['rmse']:.3f} m  "
        f"delta1 {baseline['delta1']:.3f}  (constant {baseline_depth:.2f} m, the median "
        "training depth)\n"
        f"model better than the baseline on abs_rel, rmse and delta1: {'yes' if better else 'NO'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes for CI")
    parser.add_argument("--work", type=Path, default=REPO, help="where data/ and runs/ go")
    parser.add_argument("--out", type=Path, default=REPO / "demo_out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    args = parser.parse_args(argv)

    demo = Demo(
        QUICK if args.quick else FULL,
        args.work.resolve(),
        args.out.resolve(),
        args.seed,
        args.retrain,
    )
    # Fresh bags and logs each run (rosbags never overwrites); data and checkpoints are reused.
    shutil.rmtree(demo.bags, ignore_errors=True)
    shutil.rmtree(demo.logs, ignore_errors=True)
    demo.bags.mkdir(parents=True)
    demo.logs.mkdir(parents=True)
    print(f"moa_depth_ros demo ({'quick' if args.quick else 'full'}): outputs in {demo.out}")
    try:
        train_list = demo.make_data()
        checkpoint = demo.train()
        bag = demo.make_bag()
        demo.start_node(checkpoint)
        recording = demo.replay(bag)
        demo.stop_children()
        baseline_depth = median_training_depth(train_list)
        report = demo.evaluate(recording, baseline_depth)
        cloud = demo.write_cloud(recording)
    except StageError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    finally:
        demo.stop_children()
    print(f"\n==> demo finished in {time.monotonic() - demo.started:.1f} s")
    print(_summary(report, baseline_depth))
    print(f"report: {demo.out / 'report.md'}  point cloud: {cloud}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
