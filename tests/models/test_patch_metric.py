"""The pooled patch N_SSIM used to select checkpoints."""

from __future__ import annotations

import torch

from fmc.models.losses import ssim3d
from fmc.models.patch_metric import PooledPatchNSSIM


def per_patch_n_ssim(prediction: torch.Tensor, target: torch.Tensor, view: torch.Tensor
                     ) -> torch.Tensor:
    """Each patch's own N_SSIM with the training SSIM: what a mean over patches would average."""
    ssim_prediction = ssim3d(prediction, target, reduction="none")
    ssim_view = ssim3d(view, target, reduction="none")
    return (ssim_prediction - ssim_view) / (1.0 - ssim_view).clamp_min(1e-6)


def test_identity_is_zero_target_is_one_and_pooling_weights_by_headroom():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(3, 1, 12, 16, 16, generator=generator)
    view = target + 0.3 * torch.randn(target.shape, generator=generator)
    metric = PooledPatchNSSIM()
    metric.update(view, target, view)
    assert metric.compute().item() == 0.0
    metric.reset()
    metric.update(target, target, view)
    assert abs(metric.compute().item() - 1.0) < 1e-6
    # A near-perfect patch with a small loss: the per-patch mean explodes, the pooled value not.
    almost = view.clone()  # patches 1, 2: a noisy input, predicted as is (gain 0)
    almost[0] = target[0] + 1e-3 * torch.randn(target[0].shape, generator=generator)
    worse = almost.clone()
    worse[0] = target[0] + 2e-3 * torch.randn(target[0].shape, generator=generator)
    per_patch = per_patch_n_ssim(worse, target, almost)
    metric.reset()
    metric.update(worse, target, almost)
    assert per_patch.mean().item() < -1.0
    assert -1.0 < metric.compute().item() <= 0.0
