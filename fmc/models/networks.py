"""Which 3D network a FusionModule wraps (``model.network``): fmc's UNet3D or a MONAI network.

Every network offers what the rest of fmc uses: ``in_channels``, ``residual``,
``required_divisor`` (each spatial side a multiple of it) and ``forward`` (N, C, Z, Y, X) →
(N, out_channels, Z, Y, X). With ``residual`` a network returns the view plus a learned
correction and starts as the identity (its last convolution zeroed), as UNet3D does: N_SSIM
punishes damage where the view is already good. MONAI is installed with fmc: its BasicUNet is
the default network (conf/model/monai_basicunet.yaml).
"""

from __future__ import annotations

import torch
from torch import nn

from fmc.models.unet3d import UNet3D, _group_count, make_out_activation, start_as_identity

NETWORKS = ("unet3d", "monai_basicunet", "monai_segresnet")
# BasicUNet has four fixed downsamplings; SegResNet takes depth + 1 stages (at most 4 here).
BASICUNET_DEPTH = 4
SEGRESNET_BLOCKS_DOWN = (1, 2, 2, 4)


def check_network(network: str, depth: int) -> None:
    """Raise ``ValueError`` for an unknown network or a depth it cannot have."""
    if network not in NETWORKS:
        raise ValueError(f"network={network!r}: choose one of {', '.join(NETWORKS)}")
    if network == "monai_basicunet" and depth != BASICUNET_DEPTH:
        raise ValueError(f"model.depth={depth}: monai_basicunet has {BASICUNET_DEPTH} fixed "
                         f"downsamplings; set model.depth={BASICUNET_DEPTH}")
    if network == "monai_segresnet" and not 1 <= depth <= len(SEGRESNET_BLOCKS_DOWN) - 1:
        raise ValueError(f"model.depth={depth}: monai_segresnet takes 1 to "
                         f"{len(SEGRESNET_BLOCKS_DOWN) - 1} downsamplings")


def _monai_norm(norm: str, channels: int):
    if norm == "group":
        return ("group", {"num_groups": _group_count(channels)})
    if norm == "instance":
        return ("instance", {"affine": False})
    if norm == "batch":
        return "batch"
    raise ValueError(f"norm={norm!r}: MONAI networks here take group, instance or batch")


class MonaiNetwork(nn.Module):
    """A MONAI 3D network behind UNet3D's interface (see the module text)."""

    def __init__(self, network: str, in_channels: int, out_channels: int, features: int,
                 depth: int, norm: str, negative_slope: float, out_activation: str,
                 residual: bool) -> None:
        super().__init__()
        try:
            from monai.networks import nets
        except ImportError:
            raise ValueError(f"network={network} needs MONAI: pip install 'monai>=1.3'") from None
        check_network(network, depth)
        self.in_channels, self.residual, self.depth = in_channels, bool(residual), depth
        act = ("leakyrelu", {"negative_slope": float(negative_slope), "inplace": True})
        if network == "monai_basicunet":
            f = int(features)
            self.body = nets.BasicUNet(spatial_dims=3, in_channels=in_channels,
                                       out_channels=out_channels,
                                       features=(f, f, 2 * f, 4 * f, 8 * f, f), act=act,
                                       norm=_monai_norm(norm, f))
        else:
            self.body = nets.SegResNet(spatial_dims=3, init_filters=int(features),
                                       in_channels=in_channels, out_channels=out_channels,
                                       blocks_down=SEGRESNET_BLOCKS_DOWN[:depth + 1],
                                       blocks_up=(1,) * depth, norm=_monai_norm(norm, features),
                                       act=act)
        self.out_activation = make_out_activation(out_activation, float(negative_slope))
        if self.residual:
            start_as_identity(self.last_conv)

    @property
    def required_divisor(self) -> int:
        """Every spatial side of the input must be a multiple of this."""
        return 2**self.depth

    @property
    def last_conv(self) -> nn.Conv3d:
        """The network's final convolution (zeroed for the identity start)."""
        return [m for m in self.body.modules() if isinstance(m, nn.Conv3d)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, Z, Y, X) → (N, out_channels, Z, Y, X)."""
        if x.ndim != 5 or any(int(s) % self.required_divisor for s in x.shape[2:]):
            raise ValueError(f"the input {tuple(x.shape)} must be (N, C, Z, Y, X) with each side a "
                             f"multiple of {self.required_divisor}")
        out = self.body(x)
        if self.residual:
            out = out + x[:, :1]
        return self.out_activation(out)


def build_network(network: str, **settings) -> nn.Module:
    """The network called ``network`` (one of :data:`NETWORKS`) with UNet3D's settings."""
    if network == "unet3d":
        return UNet3D(**settings)
    check_network(network, int(settings["depth"]))
    return MonaiNetwork(network, **settings)
