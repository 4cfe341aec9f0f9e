"""NYU dataset readers on tiny fixtures in the real on-disk layouts."""

import logging
import pickle

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import torch

from moa_depth_ros.geometry import NYU_FOCAL
from moa_depth_train.augment import Augmentation, AugmentConfig
from moa_depth_train.datasets import NyuSyncDataset, make_dataset, read_list_file
from moa_depth_train.nyu_mat import NyuLabeledMatDataset

H, W = 6, 10  # non-square so a transposed read cannot pass


def write_pair(scene_dir, index, rgb, depth_mm, suffix=".png"):
    """rgb H×W×3 RGB uint8; depth uint16 mm. PNG RGB keeps pixel checks exact."""
    scene_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(scene_dir / f"rgb_{index:05d}{suffix}"), rgb[..., ::-1])
    cv2.imwrite(str(scene_dir / f"sync_depth_{index:05d}.png"), depth_mm)


def pattern(seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    depth_mm = rng.integers(0, 10000, size=(H, W)).astype(np.uint16)
    depth_mm[0, 0] = 0  # invalid stays 0
    return rgb, depth_mm


@pytest.fixture
def sync_root(tmp_path):
    root = tmp_path / "sync"
    expected = {}
    for scene, index, seed in [("kitchen_0001", 3, 0), ("kitchen_0001", 1, 1), ("bath_0002", 0, 2)]:
        rgb, depth_mm = pattern(seed)
        write_pair(root / scene, index, rgb, depth_mm)
        expected[f"{scene}/rgb_{index:05d}.png"] = (rgb, depth_mm)
    (root / "bath_0002" / "rgb_00009.png").write_bytes(b"")  # no depth: ignored
    return root, expected


def test_sync_scan_reads_sorted_pairs_with_exact_values(sync_root):
    root, expected = sync_root
    dataset = NyuSyncDataset(root)
    paths = [dataset[i]["path"] for i in range(len(dataset))]
    assert len(dataset) == 3
    assert paths == sorted(paths)
    for i in range(len(dataset)):
        sample = dataset[i]
        rgb, depth_mm = expected[sample["path"].split("sync/")[1]]
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, H, W)
        assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, H, W)
        np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), rgb)
        np.testing.assert_allclose(sample["depth"][0].numpy(), depth_mm / 1000.0, rtol=1e-6)
        assert sample["depth"][0, 0, 0] == 0
        assert sample["focal"] == pytest.approx(NYU_FOCAL)


def test_jpeg_rgb_channels_are_rgb(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:] = (200, 100, 30)
    write_pair(tmp_path / "scene", 0, rgb, np.full((H, W), 1500, np.uint16), suffix=".jpg")
    sample = NyuSyncDataset(tmp_path)[0]
    np.testing.assert_allclose(sample["image"][:, 2, 3].numpy(), (200, 100, 30), atol=3)


def test_list_file_with_and_without_leading_slash(sync_root, tmp_path):
    root, expected = sync_root
    list_file = tmp_path / "list.txt"
    list_file.write_text(
        "/kitchen_0001/rgb_00003.png /kitchen_0001/sync_depth_00003.png 518.8579\n"
        "\n"
        "bath_0002/rgb_00000.png bath_0002/sync_depth_00000.png\n"
        "bath_0002/rgb_00009.png None 518.8579\n"
    )
    entries = read_list_file(list_file, root)
    assert [e[0].name for e in entries] == ["rgb_00003.png", "rgb_00000.png"]
    dataset = NyuSyncDataset(root, list_file)
    assert len(dataset) == 2
    rgb, depth_mm = expected["bath_0002/rgb_00000.png"]
    np.testing.assert_array_equal(dataset[1]["image"].permute(1, 2, 0).numpy(), rgb)
    (tmp_path / "bad.txt").write_text("a b c d e\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        NyuSyncDataset(root, tmp_path / "bad.txt")


def test_three_and_four_column_lists(sync_root, tmp_path):
    """NeWCRFs / IEBins lists carry a dense-depth path as a third column; some add a focal."""
    root, _ = sync_root
    list_file = tmp_path / "dense.txt"
    list_file.write_text(
        "kitchen_0001/rgb_00003.png kitchen_0001/sync_depth_00003.png dense/d_00003.png\n"
        "/bath_0002/rgb_00000.png /bath_0002/sync_depth_00000.png dense/d_0.png 500.5\n"
    )
    entries = read_list_file(list_file, root)
    assert [(e[1].name, e[2]) for e in entries] == [
        ("sync_depth_00003.png", 518.8579),
        ("sync_depth_00000.png", 500.5),
    ]
    depth_root = tmp_path / "elsewhere"
    moved = read_list_file(list_file, root, depth_root)
    assert moved[0][1] == depth_root / "kitchen_0001" / "sync_depth_00003.png"


def test_corrupt_samples_are_skipped_and_reported_once(sync_root, caplog):
    root, _ = sync_root
    (root / "kitchen_0001" / "rgb_00001.png").write_bytes(b"not an image")
    rgb, _ = pattern(5)
    write_pair(root / "z_scene", 0, rgb, np.zeros((H + 1, W), np.uint16))  # shape mismatch
    dataset = NyuSyncDataset(root)
    assert len(dataset) == 4
    with caplog.at_level(logging.WARNING, logger="moa_depth_train.rgbd_dataset"):
        samples = [dataset[i] for i in range(len(dataset))]
        dataset[1]
    corrupt = str(root / "kitchen_0001" / "rgb_00001.png")
    mismatched = str(root / "z_scene" / "rgb_00000.png")
    assert dataset.skipped == [corrupt, mismatched]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and corrupt in warnings[0] and mismatched in warnings[1]
    # The bad index returns the next readable sample (wrapping at the end).
    assert samples[1]["path"] == samples[2]["path"]
    assert samples[3]["path"] == samples[0]["path"]


def test_empty_and_missing_roots_explain_layout(tmp_path):
    with pytest.raises(ValueError, match=r"no NYU RGB-D pairs found in .*rgb_XXXXX\.jpg"):
        NyuSyncDataset(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        NyuSyncDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"expected nyu_depth_v2_labeled\.mat with splits\.mat"):
        NyuLabeledMatDataset(tmp_path / "nyu_depth_v2_labeled.mat")
    with pytest.raises(ValueError, match="does not exist"):
        make_dataset(tmp_path / "nope", "test")


def test_augmented_samples_are_reproducible_per_epoch(sync_root):
    root, _ = sync_root
    augment = Augmentation(AugmentConfig(crop_size=(4, 8)))
    dataset = NyuSyncDataset(root, augment=augment, seed=3)
    first = dataset[0]
    assert first["image"].shape == (3, 4, 8) and first["depth"].shape == (1, 4, 8)
    assert torch.equal(first["depth"], dataset[0]["depth"])
    epochs = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        epochs.append(dataset[0]["image"])
    assert any(not torch.equal(epochs[0], e) for e in epochs[1:])


# ----------------------------------------------------------------- official .mat (v7.3)


def write_matlab_v73(path, images, depths):
    """Write like MATLAB `save -v7.3`: HDF5 with a 512-byte MAT header and column-major data.

    MATLAB's H×W×3×N uint8 `images` and H×W×N single `rawDepths` appear in h5py with the
    dimensions reversed: N×3×W×H and N×W×H.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        data = f.create_dataset("images", data=images.transpose(0, 3, 2, 1))
        data.attrs["MATLAB_class"] = np.bytes_("uint8")
        data = f.create_dataset("rawDepths", data=depths.transpose(0, 2, 1).astype(np.float32))
        data.attrs["MATLAB_class"] = np.bytes_("single")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    header = header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(512, b"\0"))


def mat_fixture(tmp_path, height, width, count=4, test_ndxs=(2, 4)):
    y, x = np.mgrid[0:height, 0:width]
    images = np.zeros((count, height, width, 3), np.uint8)
    depths = np.zeros((count, height, width), np.float32)
    for n in range(count):
        images[n, ..., 0] = (y * 7 + n) % 256  # row in red, column in green: orientation
        images[n, ..., 1] = (x * 3 + n) % 256
        images[n, ..., 2] = n
        depths[n] = 1.0 + y * 0.01 + x * 0.0001 + n + 0.0004  # 0.4 mm under a millimetre
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    write_matlab_v73(mat, images, depths)
    scipy.io.savemat(
        tmp_path / "splits.mat",
        {"testNdxs": np.array(test_ndxs).reshape(-1, 1), "trainNdxs": np.array([[1], [3]])},
    )
    return mat, images, depths


def test_fixture_is_a_real_v73_matfile(tmp_path):
    mat, _, _ = mat_fixture(tmp_path, H, W)
    assert mat.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(mat, "r") as f:
        assert f["images"].shape == (4, 3, W, H) and f["rawDepths"].shape == (4, W, H)


def test_official_mat_orientation_and_split_indices(tmp_path):
    mat, images, depths = mat_fixture(tmp_path, H, W)
    dataset = NyuLabeledMatDataset(mat, match_extraction=False)
    assert len(dataset) == 2
    for i, frame in enumerate([1, 3]):  # testNdxs 2, 4 are 1-based
        sample = dataset[i]
        assert sample["image"].shape == (3, H, W) and sample["depth"].shape == (1, H, W)
        np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), images[frame])
        np.testing.assert_array_equal(sample["depth"][0].numpy(), depths[frame])
        assert sample["path"].endswith(f"#{frame + 1}")
    assert int(dataset[0]["image"][0, 5, 2]) == 5 * 7 + 1  # row 5, col 2 of frame index 1
    assert len(NyuLabeledMatDataset(mat, split="train")) == 2


def test_official_mat_matches_extraction_script(tmp_path):
    mat, images, depths = mat_fixture(tmp_path, 480, 640, count=2, test_ndxs=(2,))
    sample = NyuLabeledMatDataset(mat)[0]
    image = sample["image"].permute(1, 2, 0).numpy()
    assert image[:7].max() == 0 and image[474:].max() == 0 and image[:, 632:].max() == 0
    assert image[:, :7].max() == 0
    np.testing.assert_array_equal(image[7:474, 7:632], images[1, 7:474, 7:632])
    # The extraction script stores uint16(depth·1000): truncation to whole millimetres.
    expected = np.floor(depths[1].astype(np.float32) * 1000) / 1000
    np.testing.assert_allclose(sample["depth"][0].numpy(), expected, atol=1e-6)
    assert sample["depth"][0, 10, 10] == pytest.approx(1.0 + 0.1 + 0.001 + 1, abs=1e-6)


def test_official_mat_pickles_for_dataloader_workers(tmp_path):
    mat, images, _ = mat_fixture(tmp_path, H, W)
    dataset = NyuLabeledMatDataset(mat, match_extraction=False)
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone[1]["image"].permute(1, 2, 0).numpy(), images[3])


def test_official_mat_errors(tmp_path):
    mat, _, _ = mat_fixture(tmp_path, H, W)
    (tmp_path / "splits.mat").unlink()
    with pytest.raises(ValueError, match="splits.mat"):
        NyuLabeledMatDataset(mat)
    scipy.io.savemat(tmp_path / "splits.mat", {"testNdxs": np.array([[1]])})
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="HDF5"):
        NyuLabeledMatDataset(bad)
    scipy.io.savemat(tmp_path / "splits.mat", {"testNdxs": np.array([[9]])})
    with pytest.raises(ValueError, match="do not fit"):
        NyuLabeledMatDataset(mat)


def test_make_dataset_detects_layouts(tmp_path, sync_root):
    root, _ = sync_root
    assert isinstance(make_dataset(root, "train"), NyuSyncDataset)
    assert len(make_dataset(tmp_path, "train")) == 3  # finds <dir>/sync
    official = tmp_path / "official_splits" / "test" / "bathroom"
    rgb, depth_mm = pattern(9)
    write_pair(official, 45, rgb, depth_mm)
    test_set = make_dataset(tmp_path, "test")  # the extracted official split: the sync layout
    assert isinstance(test_set, NyuSyncDataset) and len(test_set) == 1
    np.testing.assert_array_equal(test_set[0]["image"].permute(1, 2, 0).numpy(), rgb)
    list_file = tmp_path / "test_files.txt"
    list_file.write_text("bathroom/rgb_00045.png bathroom/sync_depth_00045.png 518.8579\n")
    from_list = make_dataset(list_file, "test", data_root=official.parent)
    assert isinstance(from_list, NyuSyncDataset) and len(from_list) == 1

    mat_dir = tmp_path / "mat"
    mat_dir.mkdir()
    mat, _, _ = mat_fixture(mat_dir, H, W)
    assert len(make_dataset(mat, "test")) == 2
    assert len(make_dataset(mat_dir, "test")) == 2


def test_the_labeled_mat_serves_training_only_when_named(tmp_path):
    """The official 795-frame train split of the .mat is used to train only when the config
    names the .mat itself; a directory that merely holds it is not silently read as training
    data (which it is for the test split)."""
    mat, images, _ = mat_fixture(tmp_path, H, W)  # trainNdxs 1, 3
    train = make_dataset(mat, "train")
    assert isinstance(train, NyuLabeledMatDataset) and len(train) == 2
    assert "(train split)" in train.describe()
    np.testing.assert_array_equal(train[1]["image"].permute(1, 2, 0).numpy(), images[2])
    with pytest.raises(ValueError, match=r"to train on the official train split name .*labeled"):
        make_dataset(tmp_path, "train")
