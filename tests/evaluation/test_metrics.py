"""fmc.evaluation.metrics: the challenge's SSIM/N_SSIM, exact and chunked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fmc.core.errors import FmcInputError
from fmc.core.normalization import percentile_normalize, volume_stats
from fmc.evaluation.metrics import (
    GaussianFilteredVolume,
    n_ssim,
    psnr,
    score_prediction,
    ssim,
)


def reference_ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """The organisers' computation on whole volumes (Light My Cells evaluation code)."""
    p, t = percentile_normalize(prediction), percentile_normalize(target)
    return structural_similarity(t, p, data_range=max(np.ptp(p), np.ptp(t)))


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(3)
    target = rng.gamma(2.0, 300.0, (23, 41, 37)).astype(np.uint16)
    view = (0.8 * target + rng.normal(0, 60, target.shape)).clip(0).astype(np.uint16)
    prediction = (view.astype(np.float32) + rng.normal(0, 20, target.shape)).astype(np.float32)
    return view, target, prediction


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_streamed_percentiles_equal_numpy(dtype) -> None:
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize))
    values = rng.normal(100, 40, (17, 29, 31))
    volume = values.clip(0, 255).astype(dtype) if dtype == np.uint8 else values.astype(dtype)
    stats = volume_stats(volume, slab=4)
    low, high = np.percentile(volume, (2, 99.8))
    if np.dtype(dtype).kind in "ui":
        assert (stats.low, stats.high) == (low, high)  # exact, not approximately
    else:  # numpy's own rounding varies in the last bit between its code paths
        assert (stats.low, stats.high) == pytest.approx((low, high), rel=1e-13, abs=0)
    assert (stats.minimum, stats.maximum) == (volume.min(), volume.max())


def test_percentile_normalize_matches_definition_and_does_not_clip() -> None:
    volume = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    normalized = percentile_normalize(volume)
    low, high = np.percentile(volume, (2, 99.8))
    np.testing.assert_allclose(normalized, (volume - low) / (high - low))
    assert normalized.min() < 0 and normalized.max() > 1


def test_constant_volume_is_left_unchanged_without_division_by_zero() -> None:
    constant = np.full((8, 8, 8), 7, np.uint16)
    with np.errstate(all="raise"):
        normalized = percentile_normalize(constant)
    assert normalized.dtype == np.float64 and np.all(normalized == 7)
    assert ssim(constant, constant) == 1.0


@pytest.mark.parametrize("slab,block_y", [(1, 5), (4, 64), (7, 13), (16, 256), (100, 1)])
def test_chunked_equals_whole_volume_skimage(volumes, slab, block_y) -> None:
    view, target, prediction = volumes
    for candidate in (view, prediction):
        expected = reference_ssim(candidate, target)
        assert ssim(candidate, target, slab=slab, block_y=block_y) == pytest.approx(expected,
                                                                                    abs=1e-9)


def test_identity_scores_exactly_zero_and_ground_truth_one(volumes) -> None:
    view, target, _ = volumes
    assert n_ssim(view, target, view) == 0.0
    assert n_ssim(target, target, view) == 1.0


def test_n_ssim_formula_and_affine_invariance(volumes) -> None:
    view, target, prediction = volumes
    s_in, s_pred = reference_ssim(view, target), reference_ssim(prediction, target)
    expected = (s_pred - s_in) / (1 - s_in)
    assert n_ssim(prediction, target, view) == pytest.approx(expected, abs=1e-9)
    # Percentile normalisation makes the score blind to gain and offset of the prediction.
    rescaled = prediction.astype(np.float64) * 3.5 + 100.0
    assert n_ssim(rescaled, target, view) == pytest.approx(expected, abs=1e-9)


def test_psnr_equals_skimage_on_normalised_volumes(volumes) -> None:
    _, target, prediction = volumes
    p, t = percentile_normalize(prediction), percentile_normalize(target)
    expected = peak_signal_noise_ratio(t, p, data_range=max(np.ptp(p), np.ptp(t)))
    assert psnr(prediction, target, slab=5) == pytest.approx(expected, rel=1e-9)
    assert psnr(target, target) == float("inf")


def test_score_prediction_bundles_the_scores(volumes) -> None:
    view, target, prediction = volumes
    score = score_prediction(view, target, prediction, slab=6)
    assert score.ssim_input == pytest.approx(reference_ssim(view, target), abs=1e-9)
    assert score.n_ssim == pytest.approx(n_ssim(prediction, target, view), abs=1e-12)


@pytest.mark.parametrize("slab", [1, 3, 8, 50])
def test_lazy_gaussian_equals_scipy(volumes, slab) -> None:
    view = volumes[0]
    sigma = (0.8, 1.3, 0.6)
    lazy = GaussianFilteredVolume(view, sigma)
    pieces = [lazy[z:z + slab] for z in range(0, view.shape[0], slab)]
    expected = ndimage.gaussian_filter(view.astype(np.float32), sigma)
    np.testing.assert_array_equal(np.concatenate(pieces), expected)


def test_errors_name_the_problem(volumes) -> None:
    view, target, _ = volumes
    with pytest.raises(FmcInputError, match=r"shape \(23, 41, 30\) differs .* \(23, 41, 37\)"):
        ssim(view[:, :, :30], target)
    with pytest.raises(FmcInputError, match="smaller than SSIM's 7-voxel window"):
        ssim(view[:5], target[:5])
    broken = view.astype(np.float32)
    broken[3, 4, 5] = np.nan
    with pytest.raises(FmcInputError, match="NaN or infinite"):
        ssim(broken, target)


@pytest.mark.slow
def test_chunked_equals_whole_on_a_larger_volume() -> None:
    rng = np.random.default_rng(11)
    target = rng.gamma(2.0, 300.0, (64, 256, 256)).astype(np.uint16)
    view = (0.8 * target + rng.normal(0, 60, target.shape)).clip(0).astype(np.uint16)
    assert ssim(view, target, slab=13, block_y=100) == pytest.approx(reference_ssim(view, target),
                                                                    abs=1e-9)
