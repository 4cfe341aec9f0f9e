"""SPACE-CLIP training pieces by hand: SILog, SSIM, aux weighting, EMA, a few real steps, KITTI."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from moa_depth_ros.models import DepthOutput, build_model
from moa_depth_ros.models.checkpoint import load_checkpoint, save_checkpoint
from moa_depth_ros.synthetic import write_synthetic_dataset
from moa_depth_train.config import TrainingConfig
from moa_depth_train.datasets import KittiDataset, make_dataset
from moa_depth_train.ema import ModelEMA
from moa_depth_train.losses import (
    SpaceClipLoss,
    build_loss,
    gaussian_window,
    space_clip_silog,
    ssim_loss,
    ssim_map,
)
from moa_depth_train.trainer import Trainer

TINY = {
    "type": "space_clip",
    "clip_model": "ViT-T-16-test",
    "clip_pretrained": "none",
    "image_size": 64,
    "decoder_channels": [32, 16, 8, 8],
    "film_hidden": 16,
}


def test_silog_by_hand() -> None:
    pred = torch.tensor([1.0, 2.0, 4.0, 8.0])
    gt = torch.tensor([1.0, 1.0, 1.0, 2.0])
    e = [0.0, math.log(2), math.log(4), math.log(4)]
    mean = sum(e) / 4
    variance = sum((x - mean) ** 2 for x in e) / 4  # population variance
    expected = 10 * math.sqrt(variance + 0.15 * mean**2)
    assert space_clip_silog(pred, gt).item() == pytest.approx(expected, rel=1e-6)
    # a constant log error costs only its 0.15-weighted mean term
    assert space_clip_silog(2 * gt, gt).item() == pytest.approx(10 * math.sqrt(0.15) * math.log(2))


def test_ssim_by_hand_on_constant_maps() -> None:
    window = gaussian_window()
    assert window.shape == (1, 1, 11, 11) and window.sum().item() == pytest.approx(1.0)
    a = torch.full((1, 1, 16, 16), 0.5)
    assert torch.allclose(ssim_map(a, a, window)[..., 5:-5, 5:-5], torch.ones(1, 1, 6, 6))
    # Away from the zero padding, constant maps a and b: SSIM = (2ab + C1) / (a² + b² + C1).
    b = torch.full((1, 1, 16, 16), 0.25)
    c1 = 0.01**2
    centre = ssim_map(a, b, window)[0, 0, 8, 8].item()
    assert centre == pytest.approx((2 * 0.5 * 0.25 + c1) / (0.25 + 0.0625 + c1), rel=1e-5)
    # The loss normalizes both maps by the ground truth's valid min-max range.
    gt = torch.linspace(1, 5, 256).reshape(1, 1, 16, 16)
    valid = torch.ones_like(gt, dtype=torch.bool)
    assert ssim_loss(gt, gt, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert ssim_loss(gt * 2, gt, valid).item() > 0.05


def test_total_loss_weights_and_aux_terms() -> None:
    gt = torch.rand(2, 1, 16, 16) * 4 + 1
    main = gt * 1.3
    aux = [gt * 2, gt * 3, gt * 5]
    loss = SpaceClipLoss()
    terms = loss(DepthOutput(depth=main, aux_depths=aux), gt)
    valid = torch.ones_like(gt, dtype=torch.bool)
    silog = space_clip_silog(main[valid], gt[valid])
    ssim = ssim_loss(main, gt, valid)
    aux_expected = 0.10 * space_clip_silog(aux[0], gt) + 0.05 * space_clip_silog(aux[1], gt)
    assert terms["aux"].item() == pytest.approx(aux_expected.item(), rel=1e-6)  # third: weight 0
    assert terms["total"].item() == pytest.approx(
        (0.5 * silog + 0.5 * ssim + aux_expected).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="'loss.w_ce' for loss type 'space_clip'"):
        build_loss({"type": "space_clip", "w_ce": 1.0}, None)


def test_ema_arithmetic_covers_parameters_and_batchnorm_statistics() -> None:
    model = build_model(TINY)
    ema = ModelEMA(model, decay=0.9)
    assert not any(k.startswith("tower.") for k in ema.shadow)  # frozen: not tracked
    head = model.depth_prediction_head
    before_w = head[0].weight.detach().clone()
    before_mean = head[1].running_mean.clone()
    with torch.no_grad():
        head[0].weight.add_(1.0)
        head[1].running_mean.add_(2.0)
        head[1].num_batches_tracked.fill_(7)
    ema.update(model)
    name = "depth_prediction_head.0.weight"
    assert torch.allclose(ema.shadow[name], 0.9 * before_w + 0.1 * (before_w + 1.0))
    mean = ema.shadow["depth_prediction_head.1.running_mean"]
    assert torch.allclose(mean, 0.9 * before_mean + 0.1 * (before_mean + 2.0))
    assert ema.shadow["depth_prediction_head.1.num_batches_tracked"].item() == 7  # copied
    raw = head[0].weight.detach().clone()
    with ema.applied(model):
        assert torch.allclose(head[0].weight, ema.shadow[name])
    assert torch.equal(head[0].weight, raw)  # restored


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_space")
    write_synthetic_dataset(out, num_frames=32, width=64, height=48, seed=4, num_scenes=4)
    return out


def test_a_few_space_clip_steps_lower_the_loss_and_checkpoints_round_trip(synthetic, tmp_path):
    config = TrainingConfig.load(
        "space_clip_nyu",
        [
            *(f"model.{k}={v}" for k, v in TINY.items() if k != "type"),
            "model.decoder_dropout=0.0",
            f"data.train={synthetic / 'train_files.txt'}",
            f"data.data_root={synthetic}",
            f"data.val={synthetic / 'test_files.txt'}",
            "data.val_fraction=null",
            "data.test=null",
            "data.num_workers=0",
            "data.augment=null",
            "optim.batch_size=4",
            "optim.max_steps=40",
            "optim.lr_new=3e-3",
            "eval.every_steps=40",
            "run.log_every=1",
            "run.checkpoint_every=1000",
            f"run.out_dir={tmp_path}",
        ],
    )
    trainer = Trainer(config, tmp_path, progress=False)
    assert trainer.ema is not None and trainer.loss_resolution == "ground_truth"
    summary = trainer.run()
    losses = [r["train"]["total"] for r in trainer.log.records() if "train" in r]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert summary["last_eval"]["weights"] in ("raw", "ema")
    model, metadata = load_checkpoint(tmp_path / "best.safetensors")
    assert metadata["model_type"] == "space_clip"
    again, _ = load_checkpoint(save_checkpoint(model, tmp_path / "copy.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_kitti_loader_reads_the_eigen_layout(tmp_path):
    raw, depth_root = tmp_path / "raw", tmp_path / "train"
    image_dir = raw / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02" / "data"
    gt_dir = depth_root / "2011_09_26_drive_0002_sync" / "proj_depth" / "groundtruth" / "image_02"
    image_dir.mkdir(parents=True), gt_dir.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (37, 124, 3), dtype=np.uint8)
    depth = np.zeros((37, 124), np.uint16)
    depth[20, 30] = 256 * 12 + 128  # 12.5 m
    cv2.imwrite(str(image_dir / "0000000069.png"), rgb[..., ::-1])
    cv2.imwrite(str(gt_dir / "0000000069.png"), depth)
    listing = tmp_path / "eigen.txt"
    listing.write_text(
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n"
    )
    dataset = make_dataset(listing, "test", data_root=raw, kind="kitti", depth_root=depth_root)
    assert isinstance(dataset, KittiDataset) and len(dataset) == 1  # the None line is left out
    sample = dataset[0]
    assert sample["focal"] == pytest.approx(721.5377)
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), rgb)
    assert sample["depth"][0, 20, 30].item() == pytest.approx(12.5)
    assert sample["depth"][0].count_nonzero() == 1
    assert dataset.scene(0) == "2011_09_26/2011_09_26_drive_0002_sync/image_02/data"
