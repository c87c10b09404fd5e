"""Training losses: a fast torch 3D SSIM, SSIM + L1 (RWTH-GE's default) and N_SSIM + L1.

Two SSIMs live in fmc and are named apart (docs/design.md §3). This module holds the *training* one:
a torch SSIM with a Gaussian window (11 voxels, σ = 1.5) and an explicit ``data_range``, as the
seed used through torchmetrics. The challenge's metric (skimage, 7-voxel uniform window, whole
volumes) is :mod:`fmc.evaluation.metrics`; numbers from the two are not comparable.

:func:`ssim3d` reproduces torchmetrics' ``StructuralSimilarityIndexMeasure(gaussian_kernel=True,
kernel_size=11, sigma=1.5, data_range=...)`` on 5D input (torchmetrics ≥ 1.7):

1. reflect-pad every spatial axis by ``(window - 1) / 2``;
2. filter the five statistics x, y, x², y², xy with the Gaussian window, valid mode (the output
   has the input's shape again);
3. variances ``E[x²] - E[x]²`` clamped to ≥ 0 (the covariance is not clamped);
4. SSIM map with C1 = (k1·data_range)², C2 = (k2·data_range)²; no clamping of the data;
5. mean over the whole map per sample (channels included), then over the batch.

torchmetrics ≤ 1.6 (RWTH-GE's 1.6.1) also cropped the map by ``(window - 1) / 2`` on every face
before averaging (removed in torchmetrics PR #2721); ``crop_border=True`` reproduces that.

Why separable: the 3D Gaussian window is the outer product of three 1D windows, so filtering
along z, then y, then x gives the same result as the dense 11³ kernel with 33 instead of 1331
multiply-adds per voxel. The 1D passes are written as in-place sums of shifted slices, which on CPU beat
both ``conv3d`` with thin kernels and ``unfold`` (that one materialises 11 copies); the backward
pass is the same filter applied to the zero-padded gradient (see ``_SeparableFilter``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmc.core.named_choices import Registry

REDUCTIONS = ("mean", "sum", "none")
WINDOWS = ("gaussian", "uniform")


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Normalised 1D Gaussian window of ``size`` taps centred on the middle tap.

    Parameters
    ----------
    size : int
        Odd number of taps.
    sigma : float
        Standard deviation in voxels.
    dtype, device
        Of the returned tensor.

    Returns
    -------
    Tensor
        Shape ``(size,)``, summing to 1.
    """
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (window / window.sum()).to(dtype=dtype, device=device)


def _filter_valid(volume: Tensor, taps: list[float]) -> Tensor:
    """Correlate the last three axes with ``taps`` (valid mode): each axis shrinks by len(taps) - 1."""
    for axis in (-3, -2, -1):
        length = volume.shape[axis] - len(taps) + 1
        out = volume.narrow(axis, 0, length) * taps[0]
        for shift in range(1, len(taps)):
            # In-place accumulation keeps one output-sized buffer per axis; autograd needs nothing saved.
            out.add_(volume.narrow(axis, shift, length), alpha=taps[shift])
        volume = out
    return volume


class _SeparableFilter(torch.autograd.Function):
    """:func:`_filter_valid` with a hand-written backward pass.

    Autograd through the shifted slices would allocate and zero-fill one input-sized gradient per
    tap (33 of them), which made the backward pass ten times slower than the forward. The adjoint
    of a valid correlation is a full correlation with the reversed taps: zero-pad the incoming
    gradient by ``len(taps) - 1`` per side and filter it the same way.
    """

    @staticmethod
    def forward(ctx, volume: Tensor, taps: tuple[float, ...]) -> Tensor:
        ctx.taps = taps
        return _filter_valid(volume, list(taps))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        margin = len(ctx.taps) - 1
        padded = F.pad(grad, (margin,) * 6)
        return _filter_valid(padded, list(reversed(ctx.taps))), None


def _check_ssim_args(pred: Tensor, target: Tensor, data_range: float, window_size: int, sigma: float,
                     reduction: str, crop_border: bool) -> None:
    if pred.ndim != 5 or pred.shape != target.shape:
        raise ValueError(f"ssim3d expects two 5D tensors (N, C, D, H, W) of the same shape; "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1 or (
            window_size % 2 == 0):
        raise ValueError(f"window_size={window_size!r} is not valid; it must be an odd positive integer")
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} is not valid; it must be positive")
    if not data_range > 0:
        raise ValueError(f"data_range={data_range!r} is not valid; it must be positive")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not valid; choose one of {', '.join(REDUCTIONS)}")
    pad = window_size // 2
    # Reflect padding needs pad < side; the crop needs something left after removing 2·pad.
    minimum = 2 * pad + 1 if crop_border else pad + 1
    spatial = tuple(pred.shape[2:])
    if min(spatial) < minimum:
        raise ValueError(f"ssim3d: every spatial side (D, H, W) = {spatial} must be at least {minimum} "
                         f"voxels for window_size={window_size}{' with crop_border' if crop_border else ''}")


def _ssim_map(mu_x: Tensor, mu_y: Tensor, e_xx: Tensor, e_yy: Tensor, e_xy: Tensor, c1: float,
              c2: float, samples: float | None) -> Tensor:
    """The SSIM map from the windowed means of x, y, x², y², xy; with ``samples`` (the window's
    voxel count) the sample covariance, as scikit-image computes it for a uniform window."""
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = torch.clamp(e_xx - mu_xx, min=0.0)
    var_y = torch.clamp(e_yy - mu_yy, min=0.0)
    cov = e_xy - mu_xy
    if samples is not None:
        var_x, var_y, cov = (t * (samples / (samples - 1)) for t in (var_x, var_y, cov))
    return ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))


def ssim3d(pred: Tensor, target: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
           k1: float = 0.01, k2: float = 0.03, reduction: str = "mean", crop_border: bool = False,
           window: str = "gaussian") -> Tensor:
    """Gaussian-window 3D SSIM, differentiable, matching torchmetrics on 5D input.

    Parameters
    ----------
    pred, target : Tensor
        Shape (N, C, D, H, W); every side at least ``window_size // 2 + 1`` voxels.
    data_range : float
        Value range of the data (sets C1 and C2); the data are **not** clipped to it.
    window_size : int
        Taps of the Gaussian window per axis (odd). torchmetrics derives it from sigma
        (``int(3.5σ + 0.5)·2 + 1``, i.e. 11 for σ = 1.5); here it is explicit.
    sigma : float
        Standard deviation of the window in voxels.
    k1, k2 : float
        SSIM stabilising constants.
    reduction : str
        ``"mean"`` (scalar, mean over samples), ``"sum"`` or ``"none"`` (one value per sample).
    crop_border : bool
        Average only the map's interior (``window_size // 2`` voxels off every face), as
        torchmetrics ≤ 1.6 and RWTH-GE did (and scikit-image does). Default: the whole map, as
        torchmetrics ≥ 1.7.
    window : {'gaussian', 'uniform'}
        ``uniform``: the challenge metric's window (scikit-image's default): a flat
        ``window_size``³ box with the sample covariance (variances and covariance scaled by
        n / (n - 1), n = window_size³); ``sigma`` is then unused.

    Returns
    -------
    Tensor
        Scalar, or shape (N,) with ``reduction="none"``; float32 (or float64 for float64 input).
    """
    _check_ssim_args(pred, target, data_range, window_size, sigma, reduction, crop_border)
    if window not in WINDOWS:
        raise ValueError(f"window={window!r} is not valid; choose one of {', '.join(WINDOWS)}")
    # E[x²] - E[x]² cancels catastrophically in half precision: compute in float32 at least, and
    # outside any autocast region so that mixed-precision training does not downcast it again.
    dtype = torch.promote_types(pred.dtype, torch.float32)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x, y = pred.to(dtype), target.to(dtype)
        pad = window_size // 2
        taps = gaussian_window(window_size, sigma, torch.float64).tolist() if window == "gaussian" \
            else [1.0 / window_size] * window_size
        stats = torch.cat((x, y, x * x, y * y, x * y))
        stats = F.pad(stats, (pad,) * 6, mode="reflect")
        mu_x, mu_y, e_xx, e_yy, e_xy = _SeparableFilter.apply(stats, tuple(taps)).split(x.shape[0])
        ssim_map = _ssim_map(mu_x, mu_y, e_xx, e_yy, e_xy, (k1 * data_range) ** 2,
                             (k2 * data_range) ** 2,
                             float(window_size) ** 3 if window == "uniform" else None)
        if crop_border and pad:
            ssim_map = ssim_map[..., pad:-pad, pad:-pad, pad:-pad]
        per_sample = ssim_map.reshape(ssim_map.shape[0], -1).mean(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _n_ssim_terms(prediction: Tensor, target: Tensor, input_view: Tensor, data_range: float, eps: float,
                  crop_border: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample (N_SSIM, SSIM(prediction, target), SSIM(input, target))."""
    reference = _broadcast_view(input_view, target)
    ssim_pred = ssim3d(prediction, target, data_range, reduction="none", crop_border=crop_border)
    with torch.no_grad():  # the reference does not depend on the network: no graph needed
        ssim_input = ssim3d(reference, target, data_range, reduction="none", crop_border=crop_border)
    # RWTH-GE divided by 1 - SSIM(input) unguarded and blew up where the view is already ≈ the target.
    n_ssim = (ssim_pred - ssim_input) / torch.clamp(1.0 - ssim_input, min=eps)
    return n_ssim, ssim_pred, ssim_input


def _broadcast_view(input_view: Tensor | None, target: Tensor) -> Tensor:
    if input_view is None:
        raise ValueError("this loss needs input_view (the network's input channel 0, shape (N, 1, D, H, W))")
    if input_view.shape[0] != target.shape[0] or input_view.shape[2:] != target.shape[2:] or (
            input_view.shape[1] not in (1, target.shape[1])):
        raise ValueError(f"input_view {tuple(input_view.shape)} does not match the target "
                         f"{tuple(target.shape)}; pass the input's channel 0 as (N, 1, D, H, W)")
    return input_view.expand_as(target)


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} "
                         f"differ in shape")


def float32_loss(forward):
    """Run a loss's ``forward`` in float32 even under mixed precision (``trainer=gpu``'s
    bf16-mixed): SSIM is a ratio of small differences of local means, whose digits bfloat16
    would lose. Inputs are cast to float32 and autocast is off inside."""

    @functools.wraps(forward)
    def wrapper(self, prediction: Tensor, target: Tensor,
                input_view: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return forward(self, prediction.float(), target.float(),
                           None if input_view is None else input_view.float())

    return wrapper


class SsimL1Loss(nn.Module):
    """``ssim_weight · (1 - SSIM(pred, target)) + L1(pred, target)``: RWTH-GE's default loss.

    Parameters
    ----------
    ssim_weight : float
        Weight of the SSIM term (RWTH-GE's 100).
    data_range : float
        Passed to :func:`ssim3d`.
    crop_border : bool
        Passed to :func:`ssim3d` (True reproduces RWTH-GE's torchmetrics 1.6 SSIM).
    window, window_size, sigma :
        Passed to :func:`ssim3d`: RWTH-GE's Gaussian 11 (σ 1.5), or ``uniform`` 7 as the
        challenge metric.
    """

    def __init__(self, ssim_weight: float = 100.0, data_range: float = 1.0,
                 crop_border: bool = False, window: str = "gaussian", window_size: int = 11,
                 sigma: float = 1.5) -> None:
        super().__init__()
        if window not in WINDOWS:
            raise ValueError(f"window={window!r} is not valid; choose one of {', '.join(WINDOWS)}")
        self.ssim_weight, self.data_range = float(ssim_weight), float(data_range)
        self.crop_border = crop_border
        self.window, self.window_size, self.sigma = window, int(window_size), float(sigma)

    @float32_loss
    def forward(self, prediction: Tensor, target: Tensor,
                input_view: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar loss and its detached parts ``ssim`` (the SSIM itself) and ``l1``."""
        _check_pair(prediction, target)
        ssim = ssim3d(prediction, target, self.data_range, window_size=self.window_size,
                      sigma=self.sigma, crop_border=self.crop_border, window=self.window)
        l1 = F.l1_loss(prediction, target)
        loss = self.ssim_weight * (1.0 - ssim) + l1
        return loss, {"ssim": ssim.detach(), "l1": l1.detach()}


class NssimL1Loss(nn.Module):
    """``-N_SSIM(pred) + L1``, N_SSIM computed per sample with a guarded denominator, then averaged.

    ``N_SSIM = (SSIM(pred, t) - SSIM(x0, t)) / max(1 - SSIM(x0, t), eps)`` with x0 the input view.

    Parameters
    ----------
    eps : float
        Lower bound of ``1 - SSIM(x0, t)``: RWTH-GE's unguarded version blew up as it → 0.
    data_range : float
        Passed to :func:`ssim3d`.
    crop_border : bool
        Passed to :func:`ssim3d`.
    """

    def __init__(self, eps: float = 1e-3, data_range: float = 1.0, crop_border: bool = False) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps={eps!r} is not valid; it must be positive")
        self.eps, self.data_range, self.crop_border = float(eps), float(data_range), crop_border

    @float32_loss
    def forward(self, prediction: Tensor, target: Tensor,
                input_view: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar loss and detached batch means ``n_ssim``, ``ssim``, ``ssim_input``, ``l1``."""
        _check_pair(prediction, target)
        n_ssim, ssim_pred, ssim_input = _n_ssim_terms(prediction, target, input_view, self.data_range,
                                                      self.eps, self.crop_border)
        l1 = F.l1_loss(prediction, target)
        loss = -n_ssim.mean() + l1
        parts = {"n_ssim": n_ssim.mean(), "ssim": ssim_pred.mean(), "ssim_input": ssim_input.mean(), "l1": l1}
        return loss, {key: value.detach() for key, value in parts.items()}


class L1Loss(nn.Module):
    """Mean absolute error; ``input_view`` is accepted and ignored."""

    @float32_loss
    def forward(self, prediction: Tensor, target: Tensor,
                input_view: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the scalar loss and its detached copy as part ``l1``."""
        _check_pair(prediction, target)
        l1 = F.l1_loss(prediction, target)
        return l1, {"l1": l1.detach()}


LOSSES = Registry("loss", "loss.name", "the loss group: loss=<name>, conf/loss/<name>.yaml",
                  group="fmc.losses", arguments_key="loss.kwargs",
                  arguments_where="conf/loss/{name}.yaml")
LOSSES.register("ssim_l1", SsimL1Loss)
LOSSES.register("nssim_l1", NssimL1Loss)
LOSSES.register("l1", L1Loss)


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the loss called ``name`` (a name of :data:`LOSSES`) with its keyword arguments.

    A loss takes ``(prediction, target, input_view)`` and returns the scalar loss and a dict of
    detached parts to log. The config's arguments are checked once, before the data are read
    (:meth:`fmc.core.named_choices.Registry.check_arguments`, run by fmc.train's config checks).

    Raises
    ------
    FmcConfigError
        For an unknown name (the message lists the valid ones).
    """
    return LOSSES.get(name)(**kwargs)
