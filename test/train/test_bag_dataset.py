"""Training on rosbags (data.type: bag): pairing, stride, split, cache, encodings, bad input,
and the fine-tuning loop measured on a held-out synthetic bag."""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers.bags import PERIOD, T0, write_messages

from moa_depth_ros.bags.demo import write_demo_bag
from moa_depth_ros.inference.estimator import DepthEstimator
from moa_depth_ros.inference.torch_backend import TorchBackend
from moa_depth_ros.models import build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from moa_depth_ros.msgs.rosbags_messages import camera_info_message, header, image_message
from moa_depth_ros.msgs.rosbags_messages import typestore as ros_types
from moa_depth_ros.synthetic import render_sequence
from moa_depth_train import bag_decode
from moa_depth_train.bag_dataset import BagDataset, bag_datasets, split_by_segments
from moa_depth_train.bag_fingerprint import bag_fingerprint
from moa_depth_train.bag_frames import load_bag
from moa_depth_train.bag_source import BagDataError, BagSource, sibling_camera_info
from moa_depth_train.cli.train import main
from moa_depth_train.config import DataConfig, TrainingConfig, load_config
from moa_depth_train.evaluate import evaluate_estimator
from moa_depth_train.trainer import Trainer

IMAGE, DEPTH, INFO = "/camera/image_raw", "/camera/depth/image", "/camera/camera_info"
GT = "/camera/depth/ground_truth"  # the synthetic demo bags' depth topic
H, W = 24, 32
MS = 1_000_000
TINY_MODEL = [
    "model.clip_model=ViT-T-32-test",
    "model.image_size=64",
    "model.num_bins=16",
    "model.adapter_dim=8",
    "model.gate_hidden=8",
]


def _frame(i: int, height: int = H, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i``: an image whose red channel is ``i`` and depth in mm whose top-left is
    ``1000 + i`` (so a sample says which frame it came from), with invalid (0) pixels."""
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    rgb[..., 0] = i
    mm = rng.integers(500, 5000, (height, width)).astype(np.uint16)
    mm[0, 0], mm[-1, -1] = 1000 + i, 0
    return rgb, mm


def _compressed(rgb: np.ndarray, stamp: int) -> object:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return ros_types().types["sensor_msgs/msg/CompressedImage"](
        header=header(stamp, "cam"), format="rgb8; png compressed bgr8", data=png.reshape(-1)
    )


def write_bag(
    path: Path,
    count: int = 10,
    *,
    image: str = "raw",
    depth: str = "16UC1",
    image_offset: dict[int, int] | None = None,
    depth_offset: dict[int, int] | None = None,
    drop_depth: tuple[int, ...] = (),
    depth_size: tuple[int, int] | None = None,
    info_size: tuple[int, int] = (H, W),
    info: bool = True,
    image_topic: str = IMAGE,
    storage: str = "mcap",
    blank_depth: bool = False,
) -> Path:
    """``count`` frames at 10 Hz: colour (raw rgb8 or PNG CompressedImage), depth (16UC1 mm
    or 32FC1 m, optionally of another size), camera_info with fx = 2 × width of ``info_size``.
    Offsets (ns) move single header stamps; depth messages arrive 3 ms after their stamp.
    ``blank_depth``: every depth pixel invalid (0 in 16UC1, NaN in 32FC1)."""
    messages = []
    for i in range(count):
        stamp = T0 + i * PERIOD
        rgb, mm = _frame(i)
        if depth_size is not None:
            mm = cv2.resize(mm, depth_size[::-1], interpolation=cv2.INTER_NEAREST)
        if blank_depth:
            mm[:] = 0
        istamp = stamp + (image_offset or {}).get(i, 0)
        colour = image_message(rgb, istamp, "cam") if image == "raw" else _compressed(rgb, istamp)
        messages.append((image_topic, stamp, colour))
        if info:
            intrinsics = {"fx": 2.0 * info_size[1], "fy": 2.0 * info_size[1],
                          "cx": info_size[1] / 2, "cy": info_size[0] / 2}  # fmt: skip
            messages.append(
                (INFO, stamp, camera_info_message(intrinsics, *info_size[::-1], stamp, "cam"))
            )
        if i not in drop_depth:
            data = mm if depth == "16UC1" else np.where(mm > 0, mm / np.float32(1000), np.nan)
            dstamp = stamp + (depth_offset or {}).get(i, 0)
            data = data.astype(np.uint16 if depth == "16UC1" else np.float32)
            messages.append((DEPTH, stamp + 3 * MS, image_message(data, dstamp, "cam")))
    messages.sort(key=lambda m: m[1])
    write_messages(path, messages, storage)
    return path


def _data(bags, cache: Path, *overrides: str, **keys) -> DataConfig:
    sets = [f"data.{k}={v}" for k, v in keys.items()]
    config = TrainingConfig.load(
        None,
        [
            "data.type=bag",
            f"data.bags={[str(b) for b in bags]}",
            f"data.image_topic={IMAGE}",
            f"data.depth_topic={DEPTH}",
            f"data.cache_dir={cache}",
            *sets,
            *overrides,
        ],
    )
    return config.data


def _frame_numbers(dataset: BagDataset) -> list[int]:
    return [int(dataset[i]["image"][0, 0, 0]) for i in range(len(dataset))]


def test_pairing_by_stamp_uses_each_message_once_and_counts_the_rest(tmp_path):
    # Frame 3 has no depth; frame 7's image is 30 ms off (outside the 20 ms slop); frame 5's
    # depth is 8 ms off (inside). Receive times never matter: depth arrives 3 ms late.
    bag = write_bag(
        tmp_path / "bag", image_offset={7: 30 * MS}, depth_offset={5: 8 * MS}, drop_depth=(3,)
    )
    lines: list[str] = []
    train, val, test = bag_datasets(_data([bag], tmp_path / "c"), None, 0, False, lines.append)
    assert val is None and test is None
    assert _frame_numbers(train) == [0, 1, 2, 4, 5, 6, 8, 9]
    for i in range(len(train)):  # each image with its own depth (mm → m, 0 stays invalid)
        sample, number = train[i], _frame_numbers(train)[i]
        assert sample["depth"][0, 0, 0].item() == pytest.approx((1000 + number) / 1000)
        assert sample["depth"][0, -1, -1].item() == 0.0
        assert sample["path"] == f"bag@{T0 + number * PERIOD + (30 * MS if number == 7 else 0)}"
    (record,) = train.records()
    assert (record["pairs"], record["unpaired_image"], record["unpaired_depth"]) == (8, 2, 1)
    assert lines == [
        "bag bag: 8 pairs within 20 ms (2 images and 1 depth images unpaired): 8 frames 32x24"
    ]
    tight = bag_datasets(_data([bag], tmp_path / "c", slop_ms=5), None, 0, False)[0]
    assert _frame_numbers(tight) == [0, 1, 2, 4, 6, 8, 9]  # frame 5's 8 ms is now too far


def _write_ros1_bag(path: Path, count: int = 4) -> Path:
    """The frames of ``write_bag`` (16UC1 depth) in a ROS 1 bag, Noetic message types."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    with Writer(path) as writer:
        conns = {t: writer.add_connection(t, m, typestore=store)
                 for t, m in ((IMAGE, "sensor_msgs/msg/Image"), (DEPTH, "sensor_msgs/msg/Image"),
                              (INFO, "sensor_msgs/msg/CameraInfo"))}  # fmt: skip
        for i in range(count):
            stamp = T0 + i * PERIOD
            sec, nsec = divmod(stamp, 10**9)
            head = types["std_msgs/msg/Header"](
                seq=i, stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                frame_id="cam",
            )  # fmt: skip
            rgb, mm = _frame(i)
            for topic, array, encoding in ((IMAGE, rgb, "rgb8"), (DEPTH, mm, "16UC1")):
                msg = types["sensor_msgs/msg/Image"](
                    header=head, height=H, width=W, encoding=encoding, is_bigendian=0,
                    step=array.strides[0], data=array.reshape(-1).view(np.uint8),
                )  # fmt: skip
                writer.write(conns[topic], stamp, store.serialize_ros1(msg, msg.__msgtype__))
            roi = types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            )
            k = np.array([2.0 * W, 0, W / 2, 0, 2.0 * W, H / 2, 0, 0, 1])
            info = types["sensor_msgs/msg/CameraInfo"](
                header=head, height=H, width=W, distortion_model="plumb_bob", D=np.zeros(0),
                K=k, R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0, binning_y=0, roi=roi,
            )  # fmt: skip
            writer.write(conns[INFO], stamp, store.serialize_ros1(info, info.__msgtype__))
    return path


def test_sqlite3_and_ros1_bags_give_the_frames_of_mcap(tmp_path):
    mcap = bag_datasets(_data([write_bag(tmp_path / "m", 4)], tmp_path / "c"), None, 0, False)
    for bag in (
        write_bag(tmp_path / "q", 4, storage="sqlite3"),
        _write_ros1_bag(tmp_path / "1.bag"),
    ):
        other = bag_datasets(_data([bag], tmp_path / "c"), None, 0, False)[0]
        assert len(other) == 4
        for i in range(4):
            a, b = mcap[0][i], other[i]
            assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["depth"], b["depth"])
            assert a["focal"] == b["focal"] == 2.0 * W


def test_stride_keeps_every_nth_pair_in_stamp_order(tmp_path):
    bag = write_bag(tmp_path / "bag", drop_depth=(1,))
    train = bag_datasets(_data([bag], tmp_path / "c", stride=3), None, 0, False)[0]
    assert _frame_numbers(train) == [0, 4, 7]  # pairs 0, 2, 3, ...: every third of them


def test_validation_is_whole_contiguous_segments_never_between_training_frames(tmp_path):
    stamps = [T0 + i * PERIOD for i in range(100)]  # 10 s at 10 Hz
    train, val = split_by_segments(stamps, 0.2, 1.0)
    assert len(val) == 20 and sorted(train + val) == list(range(100))
    segment = [i // 10 for i in range(100)]
    val_segments = {segment[i] for i in val}
    assert len(val_segments) == 2 and val_segments.isdisjoint({segment[i] for i in train})
    # No validation frame between two training frames of its segment, and blocks are spread.
    for i in val:
        same = [j for j in train if segment[j] == segment[i]]
        assert not (any(j < i for j in same) and any(j > i for j in same))
    assert max(val_segments) - min(val_segments) >= 4
    with pytest.raises(BagDataError, match="too short"):
        split_by_segments(stamps[:5], 0.2, 1.0)

    bag = write_bag(tmp_path / "bag", 40)
    data = _data([bag], tmp_path / "c", val_fraction=0.25, segment_s=1)
    train_set, val_set, _ = bag_datasets(data, None, 0, False)
    assert _frame_numbers(val_set) == list(range(20, 30))  # the middle one of four 1 s segments
    assert sorted(_frame_numbers(train_set) + _frame_numbers(val_set)) == list(range(40))


def test_frames_are_cached_memory_mapped_and_not_decoded_again(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "bag")
    opened: list[Path] = []

    class CountingReader(bag_decode.BagReader):
        def __enter__(self):
            opened.append(self.path)
            return super().__enter__()

    monkeypatch.setattr(bag_decode, "BagReader", CountingReader)
    source = BagSource(IMAGE, DEPTH)
    first = BagDataset([load_bag(bag, source, tmp_path / "cache", progress=False)])
    assert len(opened) == 1
    again = BagDataset([load_bag(bag, source, tmp_path / "cache", progress=False)])
    assert len(opened) == 1  # the second construction read only the cache
    for i in range(len(first)):
        assert np.array_equal(first[i]["image"], again[i]["image"])
        assert np.array_equal(first[i]["depth"], again[i]["depth"])
    entry = again.bags[0].directory
    assert isinstance(np.load(entry / "images.npy", mmap_mode="r"), np.memmap)
    # DataLoader workers get the file names, not the frames.
    assert len(pickle.dumps(again)) < 4000 < (entry / "images.npy").stat().st_size
    load_bag(bag, BagSource(IMAGE, DEPTH, stride=2), tmp_path / "cache", progress=False)
    assert len(opened) == 2  # other settings, another cache entry
    assert sum(1 for p in (tmp_path / "cache").iterdir() if (p / "meta.json").is_file()) == 2


def test_compressed_colour_gives_the_raw_frames_and_its_sibling_camera_info(tmp_path):
    assert sibling_camera_info("/camera/image_raw/compressed") == INFO
    assert sibling_camera_info("/cam/color/image_raw") == "/cam/color/camera_info"
    raw = write_bag(tmp_path / "raw")
    png = write_bag(tmp_path / "png", image="png", image_topic=f"{IMAGE}/compressed")
    a = bag_datasets(_data([raw], tmp_path / "c"), None, 0, False)[0]
    b = bag_datasets(_data([png], tmp_path / "c", image_topic=f"{IMAGE}/compressed"), None, 0,
                     False)[0]  # fmt: skip
    assert len(a) == len(b) == 10
    for i in range(10):
        assert np.array_equal(a[i]["image"], b[i]["image"]) and a[i]["focal"] == b[i]["focal"]


def test_16uc1_millimetres_and_32fc1_metres_give_the_same_depth(tmp_path):
    mm = write_bag(tmp_path / "mm", depth="16UC1")
    m = write_bag(tmp_path / "m", depth="32FC1")  # NaN where 16UC1 has 0
    a = bag_datasets(_data([mm], tmp_path / "c"), None, 0, False)[0]
    b = bag_datasets(_data([m], tmp_path / "c"), None, 0, False)[0]
    for i in range(len(a)):
        assert np.array_equal(a[i]["depth"].numpy(), b[i]["depth"].numpy())
        assert (a[i]["depth"] == 0).sum() >= 1 and np.isfinite(b[i]["depth"].numpy()).all()


def test_focal_from_camera_info_as_the_node_and_depth_at_another_resolution(tmp_path):
    # camera_info of the 2x sensor (fx 128 at 64x48) describes the 32x24 image with fx 64;
    # depth at half resolution (same aspect) is resized nearest to the colour size.
    bag = write_bag(tmp_path / "bag", info_size=(2 * H, 2 * W), depth_size=(H // 2, W // 2))
    train = bag_datasets(_data([bag], tmp_path / "c"), None, 0, False)[0]
    sample = train[0]
    assert sample["focal"] == pytest.approx(2.0 * W) and sample["depth"].shape == (1, H, W)
    _, mm = _frame(0)
    half = cv2.resize(mm, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    expected = cv2.resize(half, (W, H), interpolation=cv2.INTER_NEAREST) / np.float32(1000)
    assert np.array_equal(sample["depth"][0].numpy(), expected.astype(np.float32))
    no_info = write_bag(tmp_path / "no_info", info=False)
    given = bag_datasets(_data([no_info], tmp_path / "c", focal=500), None, 0, False)[0]
    assert given[0]["focal"] == 500.0


def train_args(tmp_path: Path, bags, *sets: str, run: str = "run") -> list[str]:
    base = [
        *TINY_MODEL,
        "data.type=bag",
        "data.train=null",
        "data.val=null",
        f"data.bags={[str(b) for b in bags]}",
        f"data.image_topic={IMAGE}",
        f"data.depth_topic={DEPTH}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "optim.batch_size=4",
        "optim.max_steps=2",
        "optim.warmup_steps=1",
        "eval.every_steps=1000",
        "run.image_every=1000",
        f"run.out_dir={tmp_path / run}",
        *sets,
    ]
    return ["--config", "demo_synthetic", "--no-progress", *(f"--set={s}" for s in base)]


def _empty_bag(path: Path) -> Path:
    write_messages(path, [])
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_topic", r"topic '/nope' is not in bag .*topics present: /camera/camera_info"),
        ("no_camera_info", r"topic '/camera/camera_info' is not in bag .*or set data.focal"),
        ("no_pairs", r"no /camera/image_raw / /camera/depth/image pairs within .*50\.0 ms apart"),
        ("other_aspect", r"depth on /camera/depth/image is 24x24 but the colour image is 32x24"),
        ("empty", r"bag '.*empty' is empty"),
        ("missing_bag", r"bag '.*nothing.mcap' does not exist"),
        ("unknown_type", r"data.type must be one of files, bag, got 'pictures'"),
    ],
)
def test_bad_bags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case, expected):
    good = tmp_path / "good"
    sets, bags = [], [good]
    if case == "missing_topic":
        write_bag(good)
        sets = ["data.depth_topic=/nope"]
    elif case == "no_camera_info":
        write_bag(good, info=False)
    elif case == "no_pairs":
        write_bag(good, depth_offset={i: 50 * MS for i in range(10)})
    elif case == "other_aspect":
        write_bag(good, depth_size=(H, H))
    elif case == "empty":
        bags = [_empty_bag(tmp_path / "empty")]
    elif case == "missing_bag":
        bags = [tmp_path / "nothing.mcap"]
    else:
        write_bag(good)
        sets = ["data.type=pictures"]
    capsys.readouterr()
    assert main(train_args(tmp_path, bags, *sets)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("moa-depth-train: error: "), err
    assert re.search(expected, err), err
    run = tmp_path / "run"
    assert not list(run.glob("*.safetensors")) and not (run / "config.yaml").exists()
    cache = tmp_path / "cache"
    assert not any((p / "meta.json").exists() for p in cache.iterdir()) if cache.exists() else True


@pytest.mark.parametrize(("depth", "beside_a_good_bag"), [("16UC1", False), ("32FC1", True)])
def test_a_bag_without_valid_depth_is_refused_before_training_and_writes_nothing(
    tmp_path, capsys, depth, beside_a_good_bag
):
    """All-zero (16UC1) or all-NaN (32FC1) depth: one line naming the bag and the topic,
    exit 2, before the first step; no run directory at all and no torch warning."""
    blank = write_bag(tmp_path / "blank", depth=depth, blank_depth=True)
    bags = [write_bag(tmp_path / "good"), blank] if beside_a_good_bag else [blank]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(train_args(tmp_path, bags, "run.max_bad_steps=2", run="runs/blank"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("moa-depth-train: error: "), err
    assert err[-1].endswith(
        f"bag 'blank': no valid ground truth: none of its 10 train frames has a depth pixel "
        f"that is finite and > 0 on depth topic {DEPTH} (all 0, NaN or negative); check the "
        "topic and the depth sensor"
    ), err
    assert len(err) == len(bags) + 1  # one line per bag read, then the error
    assert not (tmp_path / "runs").exists()
    assert [str(w.message) for w in caught] == []


def test_init_must_match_the_model_config_and_loads_its_weights(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag")
    config = load_config("demo_synthetic", TINY_MODEL)
    ckpt = save_checkpoint(build_model(config["model"], load_pretrained=False), tmp_path / "i.st")
    capsys.readouterr()
    assert main([*train_args(tmp_path, [bag], "model.num_bins=8"), "--init", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_bins: 16 vs 8" in err, err
    assert not (tmp_path / "cache").exists()  # told before the bag was read
    assert main([*train_args(tmp_path, [bag]), "--init", str(tmp_path / "no.st")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("*.safetensors"))

    args = train_args(tmp_path, [bag])
    sets = [a.removeprefix("--set=") for a in args if a.startswith("--set=")]
    config = TrainingConfig.load("demo_synthetic", [*sets, f"run.init={ckpt}"])
    trainer = Trainer(config, tmp_path / "t", progress=False)
    loaded = load_checkpoint(ckpt).model.state_dict()
    assert all(np.array_equal(v, loaded[k]) for k, v in trainer.model.state_dict().items())


def _abs_rel(checkpoint: Path, dataset: BagDataset) -> float:
    model, _ = load_checkpoint(checkpoint)
    estimator = DepthEstimator(TorchBackend(model, "cpu"), warmup=False)
    report, _, _ = evaluate_estimator(estimator, dataset, "none", progress=False, samples=0)
    return next(iter(report.rows.values()))["abs_rel"]


def _small_world_bag(path: Path, frames: int, seed: int, rooms: int) -> Path:
    """Synthetic frames like ``write_demo_bag``'s, but every depth halved: a world of rooms
    half the size, the "other kind" of data a checkpoint was trained on before the robot's."""
    views = [v for r in range(rooms) for v in render_sequence(seed + r, frames // rooms, 64, 48)]
    messages = []
    for i, (rgb, depth, intrinsics) in enumerate(views):
        stamp = T0 + i * PERIOD
        messages += [
            (IMAGE, stamp, image_message(rgb, stamp, "cam")),
            (INFO, stamp, camera_info_message(intrinsics, 64, 48, stamp, "cam")),
            (GT, stamp, image_message((depth / 2).astype(np.float32), stamp, "cam")),
        ]
    write_messages(path, messages)
    return path


def test_fine_tuning_on_a_bag_improves_a_held_out_bag(tmp_path, capsys):
    """Train a checkpoint on one kind of synthetic bag (rooms half the size), score a held-out
    bag of the robot's kind, fine-tune with --init on a robot bag (a bare .mcap file), score
    the held-out bag again: the improvement is measured, not assumed."""
    _small_world_bag(tmp_path / "pre", 40, seed=50, rooms=2)
    write_demo_bag(tmp_path / "robot", 80, 64, 48, seed=10, rooms=4)
    write_demo_bag(tmp_path / "held", 24, 64, 48, seed=30, rooms=3)
    robot = tmp_path / "robot" / "robot.mcap"
    common = ["data.val_fraction=0.2", "data.segment_s=1", "optim.batch_size=8",
              "optim.warmup_steps=5", f"data.depth_topic={GT}"]  # fmt: skip
    pre_args = train_args(tmp_path, [tmp_path / "pre"], *common, "optim.max_steps=30", run="pre")
    assert main(pre_args) == 0
    pretrained = tmp_path / "pre" / "last.safetensors"
    assert read_metadata(pretrained)["init"] is None

    held = BagDataset([load_bag(tmp_path / "held", BagSource(IMAGE, GT), tmp_path / "cache")])
    before = _abs_rel(pretrained, held)
    args = train_args(tmp_path, [robot], *common, "optim.max_steps=30", run="ft")
    assert main([*args, "--init", str(pretrained)]) == 0
    tuned = tmp_path / "ft" / "last.safetensors"
    after = _abs_rel(tuned, held)
    assert "bag robot.mcap: 80 pairs within 20 ms" in capsys.readouterr().err
    print(f"held-out AbsRel before fine-tuning {before:.3f}, after {after:.3f}")
    assert after < before, (before, after)

    metadata = read_metadata(tuned)
    digest = hashlib.sha256(pretrained.read_bytes()).hexdigest()
    assert metadata["init"] == {"path": str(pretrained), "sha256": digest}
    (bag,) = metadata["bags"]
    assert bag["name"] == "robot.mcap" and bag["role"] == "train"
    assert bag["bytes"] == robot.stat().st_size
    assert bag["sha256"] == hashlib.sha256(robot.read_bytes()).hexdigest()  # = sha256sum
    assert bag["pairs"] == 80 and metadata["dataset"]["kind"] == "bag"
    assert bag_fingerprint(tmp_path / "held")["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "held").iterdir()
    )
