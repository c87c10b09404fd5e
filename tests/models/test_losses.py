"""Training losses: the separable 3D SSIM against torchmetrics, and the SSIM/N_SSIM/L1 losses."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
from torchmetrics.image import StructuralSimilarityIndexMeasure

from fmc.core.errors import FmcConfigError
from fmc.models.losses import LOSSES, L1Loss, NssimL1Loss, SsimL1Loss, build_loss, ssim3d


def _random_pair(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    return target + 0.3 * torch.randn(shape, generator=generator), target


def _structured_pair(shape, seed=1):
    """Smooth blobs on a gradient, values outside [0, 1], and a blurred, noisy, shifted estimate."""
    generator = torch.Generator().manual_seed(seed)
    n, c, d, h, w = shape
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, s) for s in (d, h, w)), indexing="ij")
    target = torch.zeros(shape) + 0.3 * xx
    for _ in range(6):
        centre = torch.rand(3, generator=generator) * 2 - 1
        distance2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
        target += 1.4 * torch.exp(-distance2 / 0.05)
    pred = 0.8 * torch.roll(target, 1, dims=-1) + 0.05 * torch.randn(shape, generator=generator) - 0.1
    return pred, target


@pytest.mark.parametrize("make", [_random_pair, _structured_pair])
@pytest.mark.parametrize("shape", [(2, 1, 16, 32, 32), (1, 1, 24, 40, 40), (1, 2, 6, 12, 9)])
def test_ssim3d_matches_torchmetrics(make, shape):
    pred, target = make(shape)
    metric = StructuralSimilarityIndexMeasure(data_range=1.0, gaussian_kernel=True, kernel_size=11, sigma=1.5)
    assert abs(ssim3d(pred, target).item() - metric(pred, target).item()) < 1e-4


def test_ssim3d_per_sample_and_cropped_match_torchmetrics_map():
    pred, target = _structured_pair((2, 1, 16, 24, 24))
    per_sample, full_map = tm_ssim(pred, target, data_range=1.0, reduction="none", return_full_image=True)
    torch.testing.assert_close(ssim3d(pred, target, reduction="none"), per_sample, atol=1e-4, rtol=0)
    # torchmetrics <= 1.6 (RWTH-GE's) averaged the map without its 5-voxel border.
    cropped = full_map[..., 5:-5, 5:-5, 5:-5].mean()
    assert abs(ssim3d(pred, target, crop_border=True).item() - cropped.item()) < 1e-4


def test_ssim3d_gradient_passes_gradcheck():
    # Checks the hand-written backward of the separable filter (and the whole SSIM) in float64.
    generator = torch.Generator().manual_seed(3)
    pred = torch.rand(1, 1, 6, 7, 8, dtype=torch.float64, generator=generator).requires_grad_()
    target = torch.rand(1, 1, 6, 7, 8, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda p: ssim3d(p, target, window_size=5), (pred,))
    assert torch.autograd.gradcheck(lambda p: ssim3d(p, target), (pred,))


def test_ssim3d_of_a_volume_with_itself_is_one():
    x = torch.rand(2, 1, 8, 16, 16)
    assert abs(ssim3d(x, x).item() - 1.0) < 1e-6
    assert ssim3d(x, x, reduction="none").shape == (2,)


def test_ssim3d_half_precision_input_is_computed_in_float32():
    pred, target = _random_pair((1, 1, 8, 12, 12))
    value = ssim3d(pred.half(), target.half())
    assert value.dtype == torch.float32
    assert abs(value.item() - ssim3d(pred.half().float(), target.half().float()).item()) < 1e-6


@pytest.mark.parametrize("kwargs, shape, fragment", [
    ({}, (1, 1, 5, 16, 16), "at least 6"),
    ({"crop_border": True}, (1, 1, 10, 16, 16), "at least 11"),
    ({"window_size": 4}, (1, 1, 8, 8, 8), "window_size=4"),
    ({"reduction": "max"}, (1, 1, 8, 8, 8), "reduction='max'"),
    ({"data_range": 0.0}, (1, 1, 8, 8, 8), "data_range=0.0"),
])
def test_ssim3d_rejects_bad_arguments(kwargs, shape, fragment):
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=fragment):
        ssim3d(x, x, **kwargs)


def test_ssim3d_rejects_mismatched_or_4d_input():
    with pytest.raises(ValueError, match="5D"):
        ssim3d(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 9))
    with pytest.raises(ValueError, match="5D"):
        ssim3d(torch.rand(1, 8, 8, 8), torch.rand(1, 8, 8, 8))


@pytest.mark.parametrize("name", ["ssim_l1", "nssim_l1", "l1"])
def test_losses_backpropagate_finite_gradients(name):
    pred, target = _structured_pair((2, 1, 8, 16, 16))
    view = target + 0.2 * torch.randn_like(target)
    pred = pred.clone().requires_grad_()
    loss, parts = build_loss(name)(pred, target, view)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(not value.requires_grad for value in parts.values())


def test_ssim_l1_loss_value_and_parts():
    pred, target = _random_pair((1, 1, 8, 16, 16))
    loss, parts = SsimL1Loss(ssim_weight=100.0)(pred, target)
    assert set(parts) == {"ssim", "l1"}
    expected = 100.0 * (1 - ssim3d(pred, target)) + (pred - target).abs().mean()
    torch.testing.assert_close(loss, expected)


def test_nssim_l1_is_finite_when_the_input_equals_the_target():
    _, target = _random_pair((2, 1, 8, 16, 16))
    pred = (target + 0.1).requires_grad_()
    loss, parts = NssimL1Loss(eps=1e-3)(pred, target, target.clone())
    loss.backward()
    assert set(parts) == {"n_ssim", "ssim", "ssim_input", "l1"}
    assert abs(parts["ssim_input"].item() - 1.0) < 1e-6
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_nssim_l1_needs_the_input_view():
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="input_view"):
        NssimL1Loss()(x, x)


def test_nssim_l1s_n_ssim_is_zero_for_the_identity_and_one_for_a_perfect_prediction():
    view, target = _structured_pair((3, 1, 8, 16, 16))
    n_ssim = {name: NssimL1Loss()(prediction, target, view)[1]["n_ssim"]
              for name, prediction in (("identity", view), ("perfect", target))}
    assert n_ssim["identity"].item() == 0.0
    torch.testing.assert_close(n_ssim["perfect"], torch.tensor(1.0), atol=1e-5, rtol=0)


def test_l1_loss_ignores_the_view():
    pred, target = _random_pair((1, 1, 6, 6, 6))
    loss, parts = L1Loss()(pred, target)
    torch.testing.assert_close(loss, (pred - target).abs().mean())
    assert set(parts) == {"l1"}


def test_factory_builds_each_loss_and_rejects_unknown_names_and_kwargs():
    assert isinstance(build_loss("ssim_l1", ssim_weight=10.0), SsimL1Loss)
    assert isinstance(build_loss("nssim_l1", eps=1e-2), NssimL1Loss)
    assert isinstance(build_loss("l1"), L1Loss)
    with pytest.raises(FmcConfigError, match="loss.name=mse: choose one of ssim_l1, nssim_l1, l1"):
        build_loss("mse")
    with pytest.raises(FmcConfigError, match="loss.kwargs.ssim_weight: loss nssim_l1 does not take"):
        LOSSES.check_arguments("nssim_l1", {"ssim_weight": 1.0})


def test_uniform_window_with_crop_equals_the_challenge_ssim():
    """window='uniform', 7, crop_border: scikit-image's SSIM (the challenge metric's) on a patch."""
    import numpy as np
    from skimage.metrics import structural_similarity

    from fmc.models.losses import SsimL1Loss, ssim3d

    rng = np.random.default_rng(3)
    target = rng.gamma(2.0, 0.3, (16, 24, 24))
    prediction = target + rng.normal(0, 0.2, target.shape)
    expected = structural_similarity(target, prediction, data_range=2.0)
    ours = ssim3d(torch.from_numpy(prediction)[None, None], torch.from_numpy(target)[None, None],
                  data_range=2.0, window_size=7, window="uniform", crop_border=True)
    assert float(ours) == pytest.approx(expected, abs=1e-6)
    loss = SsimL1Loss(ssim_weight=1.0, data_range=2.0, window="uniform", window_size=7)
    value, parts = loss(torch.from_numpy(prediction)[None, None].float(),
                        torch.from_numpy(target)[None, None].float())
    assert float(value) == pytest.approx(1 - float(parts["ssim"]) + float(parts["l1"]), rel=1e-5)
    with pytest.raises(ValueError, match="window='box'"):
        SsimL1Loss(window="box")


@pytest.mark.parametrize("name", ["ssim_l1", "nssim_l1", "l1"])
def test_losses_stay_float32_under_mixed_precision(name):
    """trainer=gpu trains in bf16-mixed: the SSIM losses must not lose their digits to it."""
    from fmc.models.losses import build_loss

    generator = torch.Generator().manual_seed(0)
    target = torch.rand((1, 1, 16, 32, 32), generator=generator)
    prediction = (target + 0.05 * torch.randn(target.shape, generator=generator)).requires_grad_()
    view = target * 0.8
    loss = build_loss(name)
    expected, _ = loss(prediction, target, view)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed, _ = loss(prediction.bfloat16(), target.bfloat16(), view.bfloat16())
    assert mixed.dtype == torch.float32
    # Only the bf16 rounding of the inputs differs, not the arithmetic.
    rounded, _ = loss(prediction.bfloat16().float(), target.bfloat16().float(),
                      view.bfloat16().float())
    torch.testing.assert_close(mixed, rounded, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(expected)


def test_trainer_gpu_is_bf16_mixed():
    from omegaconf import OmegaConf

    from fmc.core.cli import CONFIG_DIR

    assert OmegaConf.load(f"{CONFIG_DIR}/trainer/gpu.yaml").precision == "bf16-mixed"
