"""Seam-free sliding-window prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmc.tiling import importance_map, sliding_window_predict, tile_starts


@pytest.mark.parametrize("length,patch", [(100, 32), (33, 32), (32, 32), (20, 32), (257, 64)])
def test_tiles_cover_the_axis_evenly_with_the_last_flush(length, patch):
    starts = tile_starts(length, patch, 0.5)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - patch)
    steps = np.diff(starts)
    assert all(steps <= patch // 2 + 1) and (len(steps) == 0 or steps.max() - steps.min() <= 1)


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_identity_network_returns_its_input_everywhere(weighting):
    rng = np.random.default_rng(0)
    volume = rng.random((2, 37, 70, 45)).astype(np.float32)  # 2 channels, odd sizes
    result = sliding_window_predict(volume, lambda x: x[:, :1], (16, 32, 32), batch_size=3,
                                    weighting=weighting)
    assert result.shape == volume.shape[1:]
    np.testing.assert_allclose(result, volume[0], atol=1e-5, rtol=0)


def test_constant_input_gives_constant_output_without_seams():
    volume = np.full((1, 40, 64, 64), 0.7, np.float32)
    # A network whose output depends on its tile's own statistics, like instance norm.
    result = sliding_window_predict(volume, lambda x: x - x.mean() + 0.5, (16, 32, 32))
    np.testing.assert_allclose(result, 0.5, atol=1e-6)


def test_volume_smaller_than_the_patch_is_padded_and_cropped_back():
    volume = np.arange(1 * 6 * 10 * 12, dtype=np.float32).reshape(1, 6, 10, 12)
    result = sliding_window_predict(volume, lambda x: x[:, :1] * 2, (8, 16, 16))
    np.testing.assert_allclose(result, volume[0] * 2, atol=1e-4)


def test_gaussian_map_peaks_in_the_centre():
    weights = importance_map((8, 16, 16))
    assert weights.max() == pytest.approx(1.0) and weights.min() >= 1e-3
    assert weights[4, 8, 8] > weights[0, 0, 0]


def test_unet_prediction_runs_batched():
    from fmc.unet3d import UNet3D

    net = UNet3D(in_channels=2, features=4, depth=2, residual=True).eval()
    volume = np.random.default_rng(1).random((2, 20, 40, 36)).astype(np.float32)
    result = sliding_window_predict(volume, net, (8, 16, 16), batch_size=4)
    np.testing.assert_allclose(result, volume[0], atol=1e-5)  # a new residual net is the identity
    assert torch.is_grad_enabled()  # inference mode does not leak out
