"""Seam-free sliding-window prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmc.inference.tile_weights import importance_map
from fmc.inference.tiling import sliding_window_predict, tile_starts


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
    assert weights.max() == pytest.approx(1.0) and weights.min() >= 1e-3 ** 3 * 0.999
    assert weights[4, 8, 8] > weights[0, 0, 0]


def test_unet_prediction_runs_batched():
    from fmc.models.unet3d import UNet3D

    net = UNet3D(in_channels=2, features=4, depth=2, residual=True).eval()
    volume = np.random.default_rng(1).random((2, 20, 40, 36)).astype(np.float32)
    result = sliding_window_predict(volume, net, (8, 16, 16), batch_size=4)
    np.testing.assert_allclose(result, volume[0], atol=1e-5)  # a new residual net is the identity
    assert torch.is_grad_enabled()  # inference mode does not leak out


# ----------------------------------------------------------------------------------------------
# Streaming, windows, TTA (issue 6)
# ----------------------------------------------------------------------------------------------
class RecordingSource:
    """An ArraySource that remembers the largest slab it was asked for."""

    def __init__(self, channels):
        from fmc.inference.tiling import ArraySource

        self.inner = ArraySource(channels)
        self.shape = self.inner.shape
        self.largest = 0

    def slab(self, z0, z1):
        self.largest = max(self.largest, z1 - z0)
        return self.inner.slab(z0, z1)


@pytest.mark.parametrize("weighting", ["gaussian", "constant", "roof"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_identity_network_has_no_seams_for_any_window_and_overlap(weighting, overlap):
    rng = np.random.default_rng(3)
    volume = rng.random((1, 23, 45, 67)).astype(np.float32)  # odd shapes, not multiples of tiles
    result = sliding_window_predict(volume, lambda x: x[:, :1], (8, 16, 16), overlap=overlap,
                                    batch_size=3, weighting=weighting, roof_crop=(1, 3, 3))
    assert result.shape == volume.shape[1:]
    np.testing.assert_allclose(result, volume[0], atol=1e-5)


@pytest.mark.parametrize("weighting", ["gaussian", "roof"])
def test_constant_input_gives_constant_output(weighting):
    volume = np.full((2, 19, 40, 37), 0.25, np.float32)
    result = sliding_window_predict(volume, lambda x: x[:, :1] * 4 - 0.5, (8, 16, 16),
                                    weighting=weighting, roof_crop=(1, 2, 2))
    np.testing.assert_allclose(result, 0.5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 40, 9), (20, 4, 50), (7, 16, 16)])
def test_volumes_smaller_than_the_tile_along_any_axis(shape):
    volume = np.random.default_rng(1).random((1, *shape)).astype(np.float32)
    result = sliding_window_predict(volume, lambda x: x[:, :1] + 1, (8, 16, 16))
    np.testing.assert_allclose(result, volume[0] + 1, atol=1e-5)


def test_slabs_are_streamed_in_order_and_the_source_is_read_a_tile_high_at_a_time():
    from fmc.inference.tiling import iter_predicted_slabs

    volume = np.random.default_rng(2).random((1, 50, 20, 20)).astype(np.float32)
    source = RecordingSource(volume)
    slabs = list(iter_predicted_slabs(source, lambda x: x[:, :1], (8, 16, 16)))
    starts = [z0 for z0, _ in slabs]
    assert starts[0] == 0 and starts == sorted(starts) and len(slabs) > 3
    ends = [z0 + planes.shape[0] for z0, planes in slabs]
    assert starts[1:] == ends[:-1] and ends[-1] == 50  # contiguous, covering
    assert source.largest == 8  # never more than one tile of planes at a time
    np.testing.assert_allclose(np.concatenate([p for _, p in slabs]), volume[0], atol=1e-5)


def test_roof_window_is_the_seeds_fading_map():
    from fmc.inference.tile_weights import roof_window

    weights = roof_window((64, 256, 256), (5, 15, 15))
    assert weights.max() == pytest.approx(1.0)
    assert weights[:5].max() == pytest.approx(1e-3) and weights[:, :15].max() == pytest.approx(1e-3)
    # RWTH-GE's map: distance to the nearest face of the 54×226×226 core, max 27 (set by z).
    assert weights[5, 128, 128] == pytest.approx(1 / 27, rel=1e-3)
    assert weights[10, 128, 128] == pytest.approx(6 / 27, rel=1e-3)
    with pytest.raises(ValueError, match="below half"):
        roof_window((8, 16, 16), (4, 2, 2))


@pytest.mark.parametrize("axes", [["z"], ["y"], ["x"], ["y", "x"], ["z", "y", "x"]])
def test_every_flip_combination_inverts(axes):
    import torch

    from fmc.inference.tiling import flip_combinations, with_flips

    combos = flip_combinations(axes)
    assert len(combos) == 2 ** len(axes) and combos[0] == ()
    inputs = torch.rand(2, 1, 4, 6, 8)
    # Identity: every flipped pass, flipped back, is the input.
    np.testing.assert_allclose(with_flips(lambda x: x, combos)(inputs), inputs, atol=1e-6)
    # A network that is not flip-equivariant: each combination is undone exactly.
    def ramp_net(x):
        return torch.cumsum(x, dim=4) + torch.arange(x.shape[2]).view(1, 1, -1, 1, 1)

    expected = sum(torch.flip(ramp_net(torch.flip(inputs, [a + 2 for a in c])), [a + 2 for a in c])
                   for c in combos) / len(combos)
    np.testing.assert_allclose(with_flips(ramp_net, combos)(inputs), expected, atol=1e-5)


def test_tta_through_the_sliding_window_keeps_the_identity():
    volume = np.random.default_rng(4).random((1, 20, 30, 40)).astype(np.float32)
    result = sliding_window_predict(volume, lambda x: x[:, :1], (8, 16, 16),
                                    tta_axes=["z", "y", "x"])
    np.testing.assert_allclose(result, volume[0], atol=1e-5)


def test_bad_tta_axis_is_refused():
    from fmc.inference.tiling import flip_combinations

    with pytest.raises(ValueError, match="use z, y or x"):
        flip_combinations(["w"])
