"""``val/n_ssim``: the validation set's N_SSIM over patches, robust to near-perfect patches.

Per patch, N_SSIM = (s_pred − s_in) / (1 − s_in) explodes where the input is already almost
perfect (background patches: 1 − s_in ≈ 1e-4), so a mean of per-patch values is ruled by a few
patches and selected checkpoints at random. This metric pools the patches the way one volume pools
its voxels: Σ(s_pred − s_in) / Σ(1 − s_in), i.e. the per-patch values weighted by their headroom.
It is 0 for the identity and 1 for a perfect prediction, like the challenge's N_SSIM, but uses the
training SSIM (:func:`fmc.models.losses.ssim3d`: Gaussian 11, σ 1.5, data_range 1) on patches: it is not
the challenge metric (:mod:`fmc.evaluation.metrics`).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from fmc.models.losses import ssim3d


class PooledPatchNSSIM(Metric):
    """Σ(SSIM(pred, t) − SSIM(x0, t)) / Σ(1 − SSIM(x0, t)) over every patch seen (synced in DDP)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = data_range
        self.add_state("gain", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("headroom", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, target: torch.Tensor, input_view: torch.Tensor) -> None:
        # float32 whatever the trainer's precision (bf16-mixed on a GPU): see float32_loss.
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            ssim_prediction = ssim3d(prediction.detach().float(), target.float(), self.data_range,
                                     reduction="none")
            ssim_input = ssim3d(input_view.float(), target.float(), self.data_range,
                                reduction="none")
        self.gain += (ssim_prediction - ssim_input).sum().double()
        self.headroom += (1.0 - ssim_input).clamp_min(0).sum().double()

    def compute(self) -> torch.Tensor:
        return (self.gain / self.headroom.clamp_min(1e-12)).float()
