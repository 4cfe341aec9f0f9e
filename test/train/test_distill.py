"""Distillation (``distill.teacher``): a teacher labels a robot's RGB-only bags once (cached by
the teacher file's hash), a fresh student trains on those labels alone and is measured on a
held-out bag against ground truth; relative and prompt teachers get the bags' anchor topic as
the node gives it; bad teachers are one line and exit 2 with nothing written."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as hf
from bag_helpers.bags import PERIOD, T0, write_messages
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_bag_dataset import TINY_MODEL

from moa_depth_ros.anchoring import AnchorSettings, AnchorTracker, anchor_mask
from moa_depth_ros.bags.demo import write_demo_bag
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.load import load_estimator
from moa_depth_ros.inference.onnx_export import export_onnx
from moa_depth_ros.inference.options import InferenceOptions
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, image_message
from moa_depth_ros.synthetic import render_sequence
from moa_depth_train import teacher as teacher_module
from moa_depth_train.bag_dataset import BagDataset
from moa_depth_train.bag_frames import load_bag
from moa_depth_train.bag_source import BagSource
from moa_depth_train.cli.train import main
from moa_depth_train.config import ConfigError, TrainingConfig, load_config
from moa_depth_train.evaluate import evaluate_estimator
from moa_depth_train.trainer import Trainer

IMAGE, INFO = "/camera/image_raw", "/camera/camera_info"
GT = "/camera/depth/ground_truth"  # write_demo_bag's depth topic
ANCHOR = "/lidar/depth"  # sparse metric depth registered to the camera
W, H = 64, 48
RANGE = (0.1, 10.0)  # the tiny student's depth range: the labels' range
SETUP_LINE = "moa-depth-train: interrupted while setting up (data, bags, model); no run was started"


# ---------------------------------------------------------------------------- helpers


def rgb_bag(
    path: Path,
    frames: int,
    seed: int,
    rooms: int = 1,
    anchors=None,
    width: int = W,
    height: int = H,
) -> Path:
    """A camera bag without depth: rgb8 and camera_info of synthetic rooms (as
    ``write_demo_bag`` renders them). ``anchors(i, rgb, depth)`` → metres (NaN holes) or None:
    an anchor image on ANCHOR for frame ``i``."""
    per_room = frames // rooms
    views = [v for r in range(rooms) for v in render_sequence(seed + r, per_room, width, height)]
    messages = []
    for i, (rgb, depth, intrinsics) in enumerate(views):
        stamp = T0 + i * PERIOD
        messages += [
            (IMAGE, stamp, image_message(rgb, stamp, "cam")),
            (INFO, stamp, camera_info_message(intrinsics, width, height, stamp, "cam")),
        ]
        anchor = anchors(i, rgb, depth) if anchors is not None else None
        if anchor is not None:
            messages.append((ANCHOR, stamp + 1000, image_message(anchor, stamp, "cam")))
    write_messages(path, messages)
    return path


def frames_of(bag: Path, cache: Path) -> list[np.ndarray]:
    """The bag's decoded colour frames, in stamp order."""
    frames = load_bag(bag, BagSource(IMAGE, None), cache, progress=False)
    return [frames.read_image(i) for i in range(len(frames))]


def random_teacher(path: Path, seed: int, **model: object) -> Path:
    """A tiny random MoA-DepthCLIP checkpoint (a metric teacher of no skill)."""
    torch.manual_seed(seed)
    config = load_config("demo_synthetic", TINY_MODEL)["model"]
    return save_checkpoint(build_model({**config, **model}, load_pretrained=False), path)


def distill_args(tmp_path: Path, bags, teacher: Path | None, *sets: str, run="run") -> list[str]:
    base = [
        *TINY_MODEL,
        "data.type=bag",
        "data.train=null",
        "data.val=null",
        f"data.bags={[str(b) for b in bags]}",
        f"data.image_topic={IMAGE}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "optim.batch_size=4",
        "optim.max_steps=1",
        "optim.warmup_steps=1",
        "eval.every_steps=1000",
        "run.image_every=1000",
        f"run.out_dir={tmp_path / run}",
        *([f"distill.teacher={teacher}"] if teacher is not None else []),
        *sets,
    ]
    return ["--config", "demo_synthetic", "--no-progress", *(f"--set={s}" for s in base)]


def label_sets(cache: Path) -> list[Path]:
    """Every complete teacher label set in the cache."""
    return sorted(p.parent for p in cache.glob("*/teacher-*/meta.json"))


def half_written(cache: Path) -> list[Path]:
    return sorted(cache.glob("**/.*.tmp")) if cache.exists() else []


REAL_PREDICT = teacher_module.Teacher.predict


class CountingPredict:
    """Wraps ``Teacher.predict``: counts the frames the teacher labelled; optionally Ctrl-C on
    its ``interrupt_on``-th call."""

    def __init__(self, interrupt_on: int = 0) -> None:
        self.real = REAL_PREDICT
        self.calls = self.frames = 0
        self.interrupt_on = interrupt_on

    def __get__(self, teacher, owner=None):  # a method: bound to the teacher it is called on
        return functools.partial(self.__call__, teacher)

    def __call__(self, teacher, images, *args, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        self.frames += len(images)
        return self.real(teacher, images, *args, **kwargs)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("moa-depth-train: error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def _tensorboard_text(run: Path) -> str:
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    (event,) = events.Tensors("data/ground_truth/text_summary")
    return event.tensor_proto.string_val[0].decode()


def _abs_rel(checkpoint: Path, dataset: BagDataset) -> float:
    model, _ = load_checkpoint(checkpoint)
    estimator = DepthEstimator(TorchBackend(model, "cpu"), warmup=False)
    report, _, _ = evaluate_estimator(estimator, dataset, "none", progress=False, samples=0)
    return next(iter(report.rows.values()))["abs_rel"]


# ---------------------------------------------------------------------------- measured


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory) -> Path:
    """A teacher trained with ground truth on synthetic scenes by the package's own trainer
    (the tiny test model; 160 frames of 8 rooms, 150 steps: seconds on 2 cores)."""
    tmp = tmp_path_factory.mktemp("teacher")
    write_demo_bag(tmp / "gt", 160, W, H, seed=10, rooms=8)
    args = distill_args(
        tmp, [tmp / "gt" / "gt.mcap"], None, f"data.depth_topic={GT}", "optim.batch_size=8",
        "optim.max_steps=150", "optim.warmup_steps=5", "data.val_fraction=0.2",
        "data.segment_s=1", run="teacher_run",
    )  # fmt: skip
    assert main(args) == 0
    return tmp / "teacher_run" / "last.safetensors"


def test_a_student_trained_only_on_teacher_labels_of_rgb_only_bags_nears_the_teacher(
    tmp_path, capsys, trained_teacher
):
    """A fresh student (random init), trained only on the teacher's labels of bags that hold
    no depth at all, scored on a held-out bag against ground truth: within 1.3x of the
    teacher's AbsRel and far better than untrained. Figures printed (docs/training.md)."""
    robot = rgb_bag(tmp_path / "robot", 160, seed=60, rooms=8)  # no depth topic at all
    write_demo_bag(tmp_path / "held", 24, W, H, seed=30, rooms=3)  # rooms neither has seen
    args = distill_args(
        tmp_path, [robot], trained_teacher, "optim.batch_size=8", "optim.max_steps=150",
        "optim.warmup_steps=5", "data.val_fraction=0.2", "data.segment_s=1", run="student",
    )  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "bag robot: 160 images (no depth topic): 160 frames 64x48" in err
    assert "bag robot: teacher last.safetensors labelled 160 of 160 frames (160 predicted;" in err
    student = tmp_path / "student" / "last.safetensors"

    held = BagDataset([load_bag(tmp_path / "held", BagSource(IMAGE, GT), tmp_path / "cache")])
    torch.manual_seed(0)
    untrained = random_teacher(tmp_path / "untrained.safetensors", seed=0)
    models = {"teacher": trained_teacher, "student": student, "untrained": untrained}
    figures = {name: _abs_rel(path, held) for name, path in models.items()}
    print(
        f"held-out AbsRel vs ground truth: teacher {figures['teacher']:.3f}, student (teacher "
        f"labels only) {figures['student']:.3f}, untrained student {figures['untrained']:.3f}"
    )
    assert figures["student"] <= 1.3 * figures["teacher"], figures
    assert figures["student"] <= 0.7 * figures["untrained"], figures

    metadata = read_metadata(student)
    teacher = metadata["distill"]["teacher"]
    assert teacher["name"] == "last.safetensors"
    assert teacher["sha256"] == hashlib.sha256(trained_teacher.read_bytes()).hexdigest()
    assert (teacher["model_type"], teacher["output_kind"]) == ("moa_depthclip", "metric")
    validation = "the labels of teacher last.safetensors (the bags have no depth topic)"
    assert metadata["distill"]["validation_ground_truth"] == validation
    assert metadata["dataset"]["val_ground_truth"] == validation
    assert validation in _tensorboard_text(tmp_path / "student")
    (bag,) = metadata["bags"]
    assert bag["name"] == "robot" and bag["role"] == "train" and bag["images"] == 160
    assert bag["labels"]["sha256"] == teacher["sha256"] and bag["labels"]["labelled"] == 160


# ---------------------------------------------------------------------------- cache


def test_labels_are_the_teachers_output_cached_by_its_hash(tmp_path, capsys, monkeypatch):
    """The same teacher on the same bag reuses its labels (a copy under another name too: the
    key is the file's SHA-256); another teacher never does. Labels are the teacher's depth at
    each frame, clamped to the student's range (a metric teacher without anchors)."""
    bag = rgb_bag(tmp_path / "bag", 10, seed=1)
    teacher_a = random_teacher(tmp_path / "a.safetensors", seed=1)
    teacher_b = random_teacher(tmp_path / "b.safetensors", seed=2)
    copy_of_a = Path(shutil.copy(teacher_a, tmp_path / "a_copy.safetensors"))
    counting = CountingPredict()
    monkeypatch.setattr(teacher_module.Teacher, "predict", counting)
    cache = tmp_path / "cache"

    assert main(distill_args(tmp_path, [bag], teacher_a, run="r1")) == 0
    assert counting.frames == 10 and len(label_sets(cache)) == 1
    (labels_a,) = label_sets(cache)
    for run, teacher in (("r2", teacher_a), ("r3", copy_of_a)):
        assert main(distill_args(tmp_path, [bag], teacher, run=run)) == 0
        assert counting.frames == 10 and label_sets(cache) == [labels_a]  # nothing relabelled
    assert "labelled 10 of 10 frames (10 predicted; cached)" in capsys.readouterr().err
    assert main(distill_args(tmp_path, [bag], teacher_b, run="r4")) == 0
    assert counting.frames == 20 and len(label_sets(cache)) == 2

    estimator = load_estimator(InferenceOptions(checkpoint=str(teacher_a), warmup=False))
    depth = np.load(labels_a / "depth.npy")
    for i, rgb in enumerate(frames_of(bag, cache)):
        expected = estimator.predict(rgb, RANGE).depth
        np.testing.assert_allclose(depth[i], np.nan_to_num(expected), rtol=1e-5, atol=1e-6)
    other = next(p for p in label_sets(cache) if p != labels_a)
    assert not np.allclose(np.load(other / "depth.npy"), depth)  # teacher b's own labels
    meta = json.loads((labels_a / "meta.json").read_text())
    assert meta["teacher"]["sha256"] == hashlib.sha256(teacher_a.read_bytes()).hexdigest()
    assert meta["outcomes"] == {"predicted": 10} and meta["labelled"] == 10


def test_ctrl_c_while_labelling_is_one_line_and_the_half_label_set_is_never_reused(
    tmp_path, capsys, monkeypatch
):
    bag = rgb_bag(tmp_path / "bag", 10, seed=1)
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    interrupted = CountingPredict(interrupt_on=2)  # batches of 4: one written, then Ctrl-C
    monkeypatch.setattr(teacher_module.Teacher, "predict", interrupted)
    capsys.readouterr()
    assert main(distill_args(tmp_path, [bag], teacher)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == SETUP_LINE and not any("Traceback" in line for line in err), err
    cache = tmp_path / "cache"
    assert interrupted.frames == 4 and label_sets(cache) == [] and half_written(cache) == []
    assert not (tmp_path / "run").exists()

    counting = CountingPredict()
    monkeypatch.setattr(teacher_module.Teacher, "predict", counting)
    assert main(distill_args(tmp_path, [bag], teacher)) == 0
    assert counting.frames == 10 and len(label_sets(cache)) == 1  # every frame labelled afresh


# ---------------------------------------------------------------------------- refusals


def _insane_teacher(path: Path) -> Path:
    """Finite weights (1e30) whose forward overflows: NaN depth everywhere."""
    torch.manual_seed(0)
    model = build_model(load_config("demo_synthetic", TINY_MODEL)["model"], load_pretrained=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1e30)
    return save_checkpoint(model, path)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", r"distill.teacher '.*nothing.safetensors': file not found"),
        ("junk", r"distill.teacher '.*junk.safetensors' cannot be loaded: .*not a readable"),
        ("junk_graph", r"distill.teacher '.*junk.onnx' cannot be loaded: .*not a readable ONNX"),
        ("nan_labels", r"distill.teacher 'insane.safetensors' labelled none of the 10 frames of "
                       r"bag 'bag' \(10 predicted, 10 labelled but without a finite depth > 0"),
        ("same_as_init", r"distill.teacher and --init are the same file"),
        ("copy_of_init", r"distill.teacher '.*t.safetensors' is the same file as --init"),
        ("init_mismatch", r"--init .*: the checkpoint's model config differs .*num_bins: 16 vs 8"),
    ],
)  # fmt: skip
def test_bad_teachers_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case, expected):
    bag = rgb_bag(tmp_path / "bag", 10, seed=1)
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    extra: list[str] = []
    if case == "missing":
        teacher = tmp_path / "nothing.safetensors"
    elif case in ("junk", "junk_graph"):
        teacher = tmp_path / ("junk.onnx" if case == "junk_graph" else "junk.safetensors")
        teacher.write_bytes(b"\x00" * 64)
    elif case == "nan_labels":
        teacher = _insane_teacher(tmp_path / "insane.safetensors")
    elif case == "same_as_init":
        extra = ["--init", str(teacher)]
    elif case == "copy_of_init":
        extra = ["--init", str(shutil.copy(teacher, tmp_path / "init.safetensors"))]
    else:  # the run's model config (num_bins 8) is not --init's (16): the existing check
        extra = ["--init", str(teacher)]
        teacher = random_teacher(tmp_path / "other.safetensors", seed=2)
    sets = ["model.num_bins=8"] if case == "init_mismatch" else []
    capsys.readouterr()
    assert main([*distill_args(tmp_path, [bag], teacher, *sets), *extra]) == 2
    line = _one_error_line(capsys)
    assert re.search(expected, line), line
    assert not (tmp_path / "run").exists()
    cache = tmp_path / "cache"
    assert label_sets(cache) == [] and half_written(cache) == []
    if case != "nan_labels":  # refused before any bag was decoded
        assert not cache.exists() or not any(cache.glob("bag-*"))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["distill.teacher=t.safetensors"], "distill.teacher labels a robot's rosbags: set "
                                            "data.type: bag"),
        (["data.type=bag", "data.train=null", "data.bags=[b]", "data.image_topic=/i"],
         "data.depth_topic must name the bags' depth topic, or set distill.teacher"),
        (["data.type=bag", "data.train=null", "data.bags=[b]", "data.image_topic=/i",
          "data.depth_topic=/d", "data.anchor_topic=/a"], "data.anchor_topic metricizes a "
                                                          "teacher's labels: set distill.teacher"),
        (["data.type=bag", "data.train=null", "data.bags=[b]", "data.image_topic=/i",
          "distill.teacher=t", "data.anchor_topic=/i"],
         "data.image_topic and data.anchor_topic are both /i"),
        (["distill.batch_size=2"], "distill.batch_size is set but distill.teacher is not"),
        (["distill.teacher=t", "distill.precision=fp8"], "distill.precision must be one of"),
        (["distill.teacher=t", "distill.batch_size=0"], "distill.batch_size must be >= 1, got 0"),
        (["distill.teacher=t", "distill.anchor_smoothing=1"],
         "distill.anchor_smoothing must be in [0, 0.99], got 1"),
        (["distill.teacher=t", "distill.anchor_max_residual=.nan"],
         "distill.anchor_max_residual must be a finite number, got nan"),
        (["distill.teacher=t", "distill.anchor_max_residual=1e30"],  # would switch it off
         "distill.anchor_max_residual must be in [0.001, 10], got 1e+30"),
        (["distill.teacher=t", "distill.anchor_min_points=1"],
         "distill.anchor_min_points must be >= 2, got 1"),
        (["distill.teacher=t", "distill.anchor_max_scale_factor=5e38"],
         "distill.anchor_max_scale_factor must be in [1, 1000], got 5e+38"),
        (["distill.teacher=t", "distill.anchor_mode=affine"], "distill.anchor_mode must be one of"),
        (["distill.teacher=t.st", "run.init=t.st", "data.type=bag", "data.train=null",
          "data.bags=[b]", "data.image_topic=/i"], "distill.teacher and --init are the same file"),
    ],
)  # fmt: skip
def test_distill_settings_are_checked_with_the_key_named(sets, message):
    with pytest.raises(ConfigError) as caught:
        TrainingConfig.load("demo_synthetic", sets)
    assert message in str(caught.value)


# ---------------------------------------------------------------------------- depth topic


def test_a_depth_topic_is_for_validation_only_and_the_checkpoint_says_so(tmp_path):
    """distill.teacher with data.depth_topic: training frames carry the teacher's labels
    (never the depth topic), the held-out segments the depth topic's; checkpoint metadata and
    TensorBoard say what validation scored against."""
    write_demo_bag(tmp_path / "gt", 40, W, H, seed=5, rooms=2)
    bag = tmp_path / "gt" / "gt.mcap"
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    sets = [f"data.depth_topic={GT}", "data.val_fraction=0.25", "data.segment_s=1",
            "optim.max_steps=2", "eval.every_steps=1"]  # fmt: skip
    args = distill_args(tmp_path, [bag], teacher, *sets)
    config = TrainingConfig.load(
        "demo_synthetic", [a.removeprefix("--set=") for a in args if a.startswith("--set=")]
    )
    trainer = Trainer(config, tmp_path / "direct", progress=False)
    train, val = trainer.train_set, trainer.val_set
    assert train.bags[0].labels.source == "the labels of teacher t.safetensors"
    assert val.bags[0].labels.source == f"depth topic {GT}"
    estimator = load_estimator(InferenceOptions(checkpoint=str(teacher), warmup=False))
    bag_index, frame = train.items[0]
    frames = train.bags[bag_index]
    expected = np.nan_to_num(estimator.predict(frames.read_image(frame), RANGE).depth)
    np.testing.assert_allclose(frames.read_depth(frame), expected, rtol=1e-5, atol=1e-6)
    ground_truth = val.bags[bag_index].read_depth(frame)  # the depth topic, same frame
    assert ground_truth.any() and not np.allclose(ground_truth, expected)
    assert trainer.teacher.teacher is None  # freed before the student trains

    init = random_teacher(tmp_path / "init.safetensors", seed=3)  # --init works here too
    assert main([*args, "--set=run.stop_after_steps=1", "--init", str(init)]) == 0
    run = tmp_path / "run"
    metadata = read_metadata(run / "last.safetensors")
    assert metadata["init"]["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert metadata["distill"]["validation_ground_truth"] == f"depth topic {GT}"
    assert metadata["dataset"]["train_labels"] == "the labels of teacher t.safetensors"
    assert f"score against depth topic {GT}" in _tensorboard_text(run)
    assert "training labels: name t.safetensors" in _tensorboard_text(run)
    assert metadata["eval_metrics"]["count"] == 10  # scored on the held-out segment


def test_an_exported_graph_is_a_teacher(tmp_path):
    """The teacher's .onnx export labels as its checkpoint does (ONNX Runtime vs torch)."""
    bag = rgb_bag(tmp_path / "bag", 6, seed=1)
    checkpoint = random_teacher(tmp_path / "t.safetensors", seed=1)
    graph = tmp_path / "t.onnx"
    export_onnx(load_checkpoint(checkpoint).model, graph, batch="dynamic")
    for teacher, run in ((checkpoint, "torch"), (graph, "onnx")):
        assert main(distill_args(tmp_path, [bag], teacher, run=run)) == 0
    # Two label sets (the files differ, so do their hashes), equal up to the runtimes.
    one, other = (np.load(p / "depth.npy") for p in label_sets(tmp_path / "cache"))
    assert one.shape == other.shape == (6, H, W) and one.min() > 0
    np.testing.assert_allclose(one, other, rtol=1e-3)
    recorded = read_metadata(tmp_path / "onnx" / "last.safetensors")["distill"]["teacher"]
    assert (recorded["name"], recorded["backend"]) == ("t.onnx", "onnxruntime")


def test_a_metric_teacher_is_anchored_in_depth_to_a_holey_depth_camera(tmp_path):
    """One topic as depth topic (validation) and anchor topic: a metric teacher's labels are
    its depth fitted (scale, in depth) to that frame's anchors by the node's AnchorTracker."""
    write_demo_bag(tmp_path / "gt", 6, W, H, seed=5)
    bag = tmp_path / "gt" / "gt.mcap"
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    sets = [f"data.depth_topic={GT}", f"data.anchor_topic={GT}", "distill.anchor_max_residual=10"]
    assert main(distill_args(tmp_path, [bag], teacher, *sets)) == 0
    (labels,) = label_sets(tmp_path / "cache")
    depth = np.load(labels / "depth.npy")
    estimator = load_estimator(InferenceOptions(checkpoint=str(teacher), warmup=False))
    tracker = AnchorTracker(AnchorSettings(mode="scale", smoothing=0.0, max_residual=10,
                                           min_depth=RANGE[0], max_depth=RANGE[1]))  # fmt: skip
    frames = load_bag(bag, BagSource(IMAGE, GT, anchor_topic=GT), tmp_path / "cache")
    scales = []
    for i in range(len(frames)):
        anchor = frames.read_anchor(i)
        assert np.array_equal(anchor, frames.read_depth(i))  # the same topic, the same maps
        node = tracker.anchor(estimator.predict(frames.read_image(i), RANGE).depth, anchor)
        assert node.outcome == "anchored"
        np.testing.assert_allclose(depth[i], node.depth, rtol=1e-5)
        scales.append(node.fit.scale)
    assert np.ptp(scales) > 0.01  # each frame its own fit (smoothing 0)


def test_any_seed_model_type_is_a_student(tmp_path):
    """A SPACE-CLIP student of a MoA-DepthCLIP teacher (its own loss, its own depth range)."""
    bag = rgb_bag(tmp_path / "bag", 8, seed=1)
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    tiny = {"clip_model": "ViT-T-16-test", "clip_pretrained": "none", "image_size": 64,
            "decoder_channels": "[32, 16, 8, 8]", "film_hidden": 16}  # fmt: skip
    sets = [
        *(f"model.{k}={v}" for k, v in tiny.items()), "data.type=bag", "data.train=null",
        "data.data_root=null", "data.val_fraction=null", "data.test=null", "data.num_workers=0",
        f"data.bags=[{bag}]", f"data.image_topic={IMAGE}", f"data.cache_dir={tmp_path / 'c'}",
        "optim.batch_size=4", "optim.max_steps=2", f"run.out_dir={tmp_path / 'run'}",
        f"distill.teacher={teacher}",
    ]  # fmt: skip
    assert main(["--config", "space_clip_nyu", "--no-progress", *(f"--set={s}" for s in sets)]) == 0
    metadata = read_metadata(tmp_path / "run" / "last.safetensors")
    assert metadata["model_type"] == "space_clip"
    assert metadata["distill"]["teacher"]["model_type"] == "moa_depthclip"
    assert metadata["distill"]["labels"]["depth_range"] == [0.001, 10.0]  # the student's


def test_a_resume_with_another_teacher_file_is_refused(tmp_path, capsys):
    bag = rgb_bag(tmp_path / "bag", 10, seed=1)
    teacher = random_teacher(tmp_path / "t.safetensors", seed=1)
    args = distill_args(tmp_path, [bag], teacher, "optim.max_steps=3", "run.stop_after_steps=1")
    assert main(args) == 0
    state, original = (tmp_path / "run" / "state.pt").read_bytes(), teacher.read_bytes()
    random_teacher(teacher, seed=7)  # the teacher file replaced mid-run
    capsys.readouterr()
    assert main(["--resume", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "is not the teacher this run started with" in _one_error_line(capsys)
    assert (tmp_path / "run" / "state.pt").read_bytes() == state  # the run is as it was
    teacher.write_bytes(original)  # the file the run started with: the same labels
    assert main(["--resume", str(tmp_path / "run"), "--no-progress"]) == 0


# ---------------------------------------------------------------------------- foundation teachers

_DINOV2 = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 32, "image_size": 28, "patch_size": 14,
           "out_features": ["stage1", "stage2"], "reshape_hidden_states": False}  # fmt: skip
_NECK = {"reassemble_hidden_size": 16, "neck_hidden_sizes": [8, 16], "reassemble_factors": [2, 1],
         "fusion_hidden_size": 8, "head_hidden_size": 8}  # fmt: skip


def hf_teacher(tmp_path: Path, family: str) -> Path:
    """A tiny random Depth Anything (relative) or Prompt Depth Anything as an hf_depth
    checkpoint, built as test/node/test_foundation_node.py builds them."""
    torch.manual_seed(0)
    backbone = hf.Dinov2Config(**_DINOV2)
    size = {"size": {"height": 56, "width": 56}, "keep_aspect_ratio": True,
            "ensure_multiple_of": 14}  # fmt: skip
    if family == "relative":
        config = hf.DepthAnythingConfig(backbone_config=backbone, **_NECK)
        model, processor = hf.DepthAnythingForDepthEstimation(config), hf.DPTImageProcessor(**size)
    else:
        config = hf.PromptDepthAnythingConfig(backbone_config=backbone, **_NECK)
        model = hf.PromptDepthAnythingForDepthEstimation(config)
        processor = hf.PromptDepthAnythingImageProcessor(**size)
    with torch.no_grad():  # structure, and a positive output where a ReLU ends the head
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
        model.head.conv3.bias.fill_(1.0)
    directory = tmp_path / family
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    built = build_model({"type": "hf_depth", "pretrained": str(directory)})
    return save_checkpoint(built.eval(), tmp_path / f"{family}.safetensors")


def _sparse(values: np.ndarray, seed: int, share: float = 0.2) -> np.ndarray:
    keep = np.random.default_rng(seed).random(values.shape) < share
    return np.where(keep, values, np.nan).astype(np.float32)


def test_a_relative_teacher_is_anchored_as_the_node_anchors_it(tmp_path, capsys):
    """Labels of a relative teacher are its output anchored to the anchor topic in inverse
    depth by the node's AnchorTracker (smoothing 0.5, as the node): equal to the tracker run
    over the same frames, and metres (the anchors' scene). A frame without an anchor, or with
    too few points, gets no label. Without data.anchor_topic the teacher is refused."""
    teacher = hf_teacher(tmp_path, "relative")
    estimator = load_estimator(InferenceOptions(checkpoint=str(teacher), warmup=False))
    truths: dict[int, np.ndarray] = {}

    def anchors(i: int, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray | None:
        # The scene the anchors measure: exactly what an inverse-depth fit recovers.
        truths[i] = (1.0 / (0.05 * estimator.predict(rgb).depth + 0.1)).astype(np.float32)
        if i == 5:
            return None  # the sensor dropped this frame
        return _sparse(truths[i], i, share=0.001 if i == 3 else 0.2)  # frame 3: ~3 points

    bag = rgb_bag(tmp_path / "bag", 8, seed=2, anchors=anchors)
    capsys.readouterr()
    assert main(distill_args(tmp_path, [bag], teacher)) == 2  # no anchor topic
    assert "is a relative model" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists() and label_sets(tmp_path / "cache") == []

    sets = [f"data.anchor_topic={ANCHOR}", "distill.anchor_smoothing=0.5"]
    assert main(distill_args(tmp_path, [bag], teacher, *sets)) == 0
    err = capsys.readouterr().err
    assert "labelled 6 of 8 frames (6 anchored, 1 missing, 1 too_few_points;" in err
    # The 2 frames without a label are not trained on (they would only make empty batches).
    assert "training on the 6 of 8 frames the teacher labelled" in err
    (labels,) = label_sets(tmp_path / "cache")
    depth = np.load(labels / "depth.npy")
    settings = AnchorSettings(mode="scale_shift", smoothing=0.5, min_depth=RANGE[0],
                              max_depth=RANGE[1], space="inverse_depth")  # fmt: skip
    tracker = AnchorTracker(settings)
    frames = load_bag(bag, BagSource(IMAGE, None, anchor_topic=ANCHOR), tmp_path / "cache")
    for i in range(len(frames)):
        prediction = estimator.predict(frames.read_image(i)).depth
        node = tracker.anchor(prediction, frames.read_anchor(i))
        if i in (3, 5):
            assert node.outcome == ("too_few_points" if i == 3 else "missing")
            assert not depth[i].any()  # the node would reuse the last fit; a label does not
            continue
        assert node.outcome == "anchored"
        np.testing.assert_allclose(depth[i], np.nan_to_num(node.depth), rtol=1e-4)
        inside = (truths[i] > RANGE[0]) & (truths[i] < RANGE[1])
        assert inside.sum() > 500  # of 3072 pixels; the rest is clipped to the range
        assert np.abs(depth[i][inside] / truths[i][inside] - 1).max() < 1e-3  # metres
    meta = json.loads((labels / "meta.json").read_text())
    assert meta["teacher"]["output_kind"] == "relative"
    assert meta["teacher"]["model_type"] == "hf_depth"


def test_a_prompt_teacher_takes_the_anchor_topic_as_its_prompt(tmp_path, capsys):
    teacher = hf_teacher(tmp_path, "prompt")
    bag = rgb_bag(tmp_path / "bag", 6, seed=3,
                  anchors=lambda i, rgb, depth: None if i == 2 else _sparse(depth, i))  # fmt: skip
    capsys.readouterr()
    assert main(distill_args(tmp_path, [bag], teacher)) == 2
    assert "takes a depth prompt with every frame: set data.anchor_topic" in (
        _one_error_line(capsys)
    )
    assert main(distill_args(tmp_path, [bag], teacher, f"data.anchor_topic={ANCHOR}")) == 0
    assert "labelled 5 of 6 frames (1 missing, 5 prompted;" in capsys.readouterr().err
    (labels,) = label_sets(tmp_path / "cache")
    depth = np.load(labels / "depth.npy")
    estimator = load_estimator(InferenceOptions(checkpoint=str(teacher), warmup=False))
    frames = load_bag(bag, BagSource(IMAGE, None, anchor_topic=ANCHOR), tmp_path / "cache")
    for i in range(len(frames)):
        anchor = frames.read_anchor(i)
        if i == 2:
            assert anchor is None and not depth[i].any()
            continue
        prompt = np.where(anchor_mask(anchor, RANGE), anchor, np.nan).astype(np.float32)
        expected = estimator.predict(frames.read_image(i), RANGE, prompt_depth=prompt).depth
        np.testing.assert_allclose(depth[i], np.nan_to_num(expected), rtol=1e-4)
