"""``experiment=rwth_ge``: every row marked "same" in docs/rwth_ge.md, checked on the composed config
and on what fmc builds from it (the facts about RWTH-GE, are those restated in that
document). Rows that differ on purpose are asserted only where fmc's side is a key of the experiment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from fmc.core.cli import CONFIG_DIR

SEED = ["experiment=rwth_ge", "profile=gpu"]


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(scope="module")
def cfg():
    return compose_train(*SEED)


@pytest.fixture(scope="module")
def module(cfg):
    from fmc.training.builders import build_module

    return build_module(cfg, {})


def test_composes_and_passes_the_config_checks(cfg):
    from fmc.training.config_checks import check_config

    check_config(cfg)
    assert cfg.seed == 1337  # RWTH-GE's torch/numpy seed


# -- network -----------------------------------------------------------------------------------
def test_network_is_the_seeds_unet3d(cfg, module):
    from fmc.models.unet3d import UNet3D

    model = cfg.model
    assert (model.features, model.depth, model.norm, model.out_activation) == (16, 3, "instance", "none")
    assert model.negative_slope == 0.2 and model.residual is False
    assert model.confidence == "none" and model.fallback == "none" and model.averaging == "none"
    net = module.net
    assert isinstance(net, UNet3D) and net.in_channels == 2 and net.out_channels == 1
    assert sum(p.numel() for p in module.parameters()) == 1_981_145


def _conv_signature(layer: nn.Module) -> tuple:
    kind = "convT" if isinstance(layer, nn.ConvTranspose3d) else "conv"
    return kind, layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0]


def test_network_layers_match_the_seeds_table(module):
    # RWTH-GE's module_UNet3D, block by block (c1, d1, c2, d2, c3, d3, c4, u1, c5, u2, c6, u3, c7, out).
    expected = [
        ("conv", 2, 8, 3, 1), ("conv", 8, 16, 3, 1), ("conv", 16, 16, 4, 2),
        ("conv", 16, 16, 3, 1), ("conv", 16, 32, 3, 1), ("conv", 32, 32, 4, 2),
        ("conv", 32, 32, 3, 1), ("conv", 32, 64, 3, 1), ("conv", 64, 64, 4, 2),
        ("conv", 64, 64, 3, 1), ("conv", 64, 128, 3, 1),
        ("convT", 128, 128, 3, 2), ("conv", 128, 128, 1, 1),
        ("conv", 192, 64, 3, 1), ("conv", 64, 64, 3, 1),
        ("convT", 64, 64, 3, 2), ("conv", 64, 64, 1, 1),
        ("conv", 96, 32, 3, 1), ("conv", 32, 32, 3, 1),
        ("convT", 32, 32, 3, 2), ("conv", 32, 32, 1, 1),
        ("conv", 48, 16, 3, 1), ("conv", 16, 16, 3, 1),
        ("conv", 16, 16, 3, 1), ("conv", 16, 16, 3, 1), ("conv", 16, 1, 1, 1),
    ]
    convs = [m for m in module.net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert Counter(_conv_signature(m) for m in convs) == Counter(expected)
    assert all(m.bias is not None for m in convs)
    # Every conv but the last 1x1 is followed by a non-affine InstanceNorm and LeakyReLU(0.2).
    norms = [m for m in module.net.modules() if isinstance(m, nn.InstanceNorm3d)]
    acts = [m for m in module.net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(norms) == len(acts) == len(expected) - 1
    assert all(not n.affine and not n.track_running_stats and n.eps == 1e-5 for n in norms)
    assert all(a.negative_slope == 0.2 for a in acts)
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm3d)) for m in module.net.modules())
    assert isinstance(module.net.out_activation, nn.Identity)
    assert module.net.last_conv is module.net.head[-1] and module.net.head[-1].kernel_size == (1, 1, 1)


def test_network_output_is_an_unbounded_regression_of_the_input_shape(module):
    torch.manual_seed(0)
    output = module(torch.randn(1, 2, 16, 24, 24) * 5)
    assert output.shape == (1, 1, 16, 24, 24)
    assert module.net.required_divisor == 8  # 3 downsamplings: sides must be multiples of 8


# -- inputs and intensities --------------------------------------------------------------------
def test_inputs_are_the_view_and_its_surface_distance(cfg, module):
    from fmc.preprocessing.channel_specs import CHANNELS, scale_channel

    assert list(cfg.channels.list) == ["raw_image", "surface_distance"]
    assert module.in_channels == 2
    assert CHANNELS["raw_image"].dataset == "data/raw_image"
    assert CHANNELS["surface_distance"].dataset == "data/surface_distance"
    # The view enters unchanged (RWTH-GE's data_norm=fmc_percentile divides by 1 after subtracting 0).
    view = np.array([[[-0.3, 0.5, 1.7]]], np.float32)
    assert np.array_equal(scale_channel("raw_image", view), view)


def test_distance_scaling_is_fmcs_documented_difference(cfg, module):
    # Not "same": RWTH-GE fed raw µm (dist_handling none); fmc feeds tanh(d / 50 µm).
    from fmc.preprocessing.channel_specs import scale_channel

    assert cfg.data.distance_scale_um == 50.0
    assert module.hparams.channel_scales_um["surface_distance"] == 50.0
    assert scale_channel("surface_distance", np.array([50.0]), 50.0)[0] == pytest.approx(np.tanh(1.0))


def test_intensities_are_percentile_normalised_per_volume_without_clipping():
    from fmc.core.normalization import PERCENTILE_HIGH, PERCENTILE_LOW, percentile_normalize
    from fmc.preprocessing.conversion import normalize_float32

    assert (PERCENTILE_LOW, PERCENTILE_HIGH) == (2.0, 99.8)
    volume = np.random.default_rng(0).gamma(2.0, 100.0, (8, 16, 16))
    low, high = np.percentile(volume, (2, 99.8))
    expected = (volume - low) / (high - low)
    np.testing.assert_allclose(percentile_normalize(volume), expected)
    stored = normalize_float32(volume, low, high)
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-6)
    assert stored.min() < 0 and stored.max() > 1  # not clipped
    constant = np.full((2, 3, 3), 7.0)
    assert np.array_equal(percentile_normalize(constant), constant)  # P2 == P99.8: unchanged


# -- loss --------------------------------------------------------------------------------------
def test_loss_is_100_times_one_minus_ssim_plus_l1(cfg, module):
    from fmc.models.losses import SsimL1Loss

    assert cfg.loss.name == "ssim_l1"
    assert cfg.loss.kwargs.ssim_weight == 100.0 and cfg.loss.kwargs.crop_border is True
    loss = module.loss_fn
    assert isinstance(loss, SsimL1Loss)
    assert (loss.ssim_weight, loss.data_range, loss.crop_border) == (100.0, 1.0, True)
    assert (loss.window, loss.window_size, loss.sigma) == ("gaussian", 11, 1.5)


def test_loss_value_matches_torchmetrics_16_ssim(module):
    # torchmetrics <= 1.6 (RWTH-GE's): reflect-pad 5, Gaussian 11 / sigma 1.5, data_range 1 with no
    # clamping of the data, map cropped by 5 on every face; plus the mean absolute error.
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    generator = torch.Generator().manual_seed(1)
    target = torch.rand(1, 1, 16, 24, 24, generator=generator) * 1.4 - 0.1  # outside [0, 1]
    prediction = 0.8 * target + 0.1 * torch.randn(target.shape, generator=generator)
    _, full_map = tm_ssim(prediction, target, data_range=1.0, gaussian_kernel=True, sigma=1.5,
                          kernel_size=11, k1=0.01, k2=0.03, return_full_image=True)
    ssim = full_map[..., 5:-5, 5:-5, 5:-5].mean()
    expected = 100.0 * (1.0 - ssim) + (prediction - target).abs().mean()
    value, parts = module.loss_fn(prediction, target, prediction)
    assert value.item() == pytest.approx(expected.item(), abs=2e-3)
    assert parts["ssim"].item() == pytest.approx(ssim.item(), abs=2e-5)


def test_the_launchers_nssim_variant_composes_with_the_same_ssim():
    from fmc.training.builders import build_module
    from fmc.training.config_checks import check_config

    variant = compose_train(*SEED, "loss=nssim_l1")
    check_config(variant)
    loss = build_module(variant, {}).loss_fn
    assert type(loss).__name__ == "NssimL1Loss" and loss.crop_border is True


# -- optimisation ------------------------------------------------------------------------------
def test_optimizer_is_radam_1e3_without_schedule_or_clipping(cfg, module):
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.weight_decay, cfg.model.scheduler) == \
        ("radam", 0.001, 0.0, "none")
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.RAdam  # no scheduler dict
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.001 and group["weight_decay"] == 0.0
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert cfg.trainer.gradient_clip_val is None and cfg.trainer.precision == "32-true"
    assert cfg.trainer.accumulate_grad_batches == 1


def test_trainer_cap_and_validation_cadence(cfg):
    assert cfg.trainer.max_epochs == 5000  # RWTH-GE's --epochs
    assert cfg.trainer.check_val_every_n_epoch == 1 and cfg.trainer.num_sanity_val_steps == 2


# -- data --------------------------------------------------------------------------------------
def test_patch_batch_foreground_epoch_and_augmentation_keys(cfg):
    data = cfg.data
    assert list(data.patch_size) == [64, 256, 256]
    assert data.batch_size == 1 and data.num_workers == 0
    assert data.foreground_share == 0.75
    assert data.epoch_steps is None and data.samples_per_volume == 1
    assert data.augment is False


def test_cpu_profile_keeps_the_network_and_batch_and_shrinks_the_patch():
    cpu = compose_train("experiment=rwth_ge", "profile=cpu")
    assert cpu.model.features == 16 and cpu.model.norm == "instance" and cpu.data.batch_size == 1
    assert list(cpu.data.patch_size) == [16, 64, 64]


def test_foreground_is_the_fused_voxels_at_or_above_the_mean():
    from fmc.preprocessing.conversion import foreground_coordinates

    volume = np.random.default_rng(2).random((6, 8, 8)).astype(np.float32)
    coordinates, threshold, total = foreground_coordinates(volume, max_count=10**6, seed=0)
    assert threshold == pytest.approx(float(volume.mean(dtype=np.float64)))
    assert np.array_equal(coordinates, np.argwhere(volume >= threshold)) and total == len(coordinates)


def test_a_volume_smaller_than_the_patch_is_reflect_padded_at_its_end():
    from fmc.data.patches import pad_to_patch

    array = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    padded = pad_to_patch(array, (8, 6, 9))
    assert np.array_equal(padded, np.pad(array, [(0, 0), (0, 3), (0, 0), (0, 2)], mode="reflect"))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """Five study-1 pairs of ramp volumes (target = view) and a training list."""
    from fmc.io.h5 import FOREGROUND, write_h5

    root = tmp_path_factory.mktemp("rwth_ge")
    shape = (12, 20, 20)
    z, y, x = np.indices(shape)
    ramp = (z * 10000 + y * 100 + x).astype(np.float32)
    attrs = {"study": 1, "content": "nucleus", "spacing_zyx": [1.0, 0.2, 0.2]}
    rows = []
    for index in range(5):
        write_h5(root / f"i{index}_angle.h5", {"data/raw_image": ramp, "data/surface_distance": ramp},
                 {**attrs, "kind": "angle"})
        foreground = np.argwhere(ramp >= ramp.mean()).astype(np.uint16)
        write_h5(root / f"i{index}_fused.h5", {"data/raw_image": ramp, FOREGROUND: foreground},
                 {**attrs, "kind": "fused"})
        rows.append(f"i{index}_angle.h5;i{index}_fused.h5")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def test_an_epoch_is_one_unaugmented_patch_per_training_volume(tiny_root):
    from fmc.training.builders import build_datamodule

    small = compose_train(*SEED, "study=1", "content=nucleus", "data.patch_size=[8,16,16]",
                          f"data.train_list={tiny_root / 'train.csv'}", "data.val_list=null")
    datamodule = build_datamodule(small, tiny_root)
    datamodule.setup("fit")
    try:
        assert datamodule.augmentation_axes() == ((), ())
        assert datamodule.robustness is None
        dataset = datamodule.datasets["train"]
        assert dataset.flip_axes == () and dataset.rot90_planes == () and dataset.robustness is None
        assert dataset.foreground_share == 0.75 and len(dataset) == 5
        loader = datamodule.train_dataloader()
        assert loader.batch_size == 1 and loader.drop_last and len(loader) == 5
        z, y, x = np.indices((12, 20, 20))
        ramp = (z * 10000 + y * 100 + x).astype(np.float32)
        for index in range(len(dataset)):
            item = dataset[index]
            window = tuple(slice(o, o + p) for o, p in zip(item["origin"].tolist(), (8, 16, 16), strict=True))
            assert np.array_equal(item["input"][0].numpy(), ramp[window])  # never flipped or turned
            assert np.array_equal(item["target"][0].numpy(), ramp[window])
    finally:
        datamodule.teardown("fit")


# -- selection ---------------------------------------------------------------------------------
def test_checkpoints_keep_the_latest_and_the_best_by_the_patch_proxy(cfg, tmp_path):
    # RWTH-GE kept only the latest checkpoint (monitor "step"): fmc's last.ckpt. The best by
    # val/n_ssim is fmc's addition (docs/rwth_ge.md, "selection").
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fmc.training.builders import build_callbacks

    assert cfg.callbacks.checkpoint.monitor == "val/n_ssim" and cfg.callbacks.checkpoint.save_last
    assert not cfg.callbacks.volume_validation.enabled
    checkpoints = [c for c in build_callbacks(cfg, tmp_path) if isinstance(c, ModelCheckpoint)]
    assert sorted(str(c.monitor) for c in checkpoints) == ["None", "val/n_ssim"]
    last = next(c for c in checkpoints if c.monitor is None)
    assert last.filename == "last" and last.save_top_k == 1


# -- prediction --------------------------------------------------------------------------------
def test_roof_window_is_the_seeds_fading_map():
    # RWTH-GE's Docker tiles: 64x256x256, crop 5/15/15 -> nonzero core 54x226x226, weights 1/27 .. 1.
    from fmc.inference.tile_weights import RWTH_GE_ROOF_CROP, WEIGHT_FLOOR, roof_window

    assert RWTH_GE_ROOF_CROP == (5, 15, 15)
    weights = roof_window((64, 256, 256), RWTH_GE_ROOF_CROP)
    core = weights > WEIGHT_FLOOR
    index = np.argwhere(core)
    assert index.min(axis=0).tolist() == [5, 15, 15] and (index.max(axis=0) + 1).tolist() == [59, 241, 241]
    assert weights[core].min() == pytest.approx(1 / 27) and weights.max() == 1.0
    assert weights[~core].max() == pytest.approx(WEIGHT_FLOOR)  # RWTH-GE's zeros, floored (a difference)
