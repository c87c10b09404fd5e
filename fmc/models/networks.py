"""Which 3D network a FusionModule wraps (``model.network``): the registry :data:`NETWORKS`.

Every network offers what the rest of fmc uses: ``in_channels``, ``residual``,
``required_divisor`` (each spatial side a multiple of it) and ``forward`` (N, C, Z, Y, X) →
(N, out_channels, Z, Y, X). With ``residual`` a network returns the view plus a learned
correction and starts as the identity (its last convolution zeroed), as UNet3D does: N_SSIM
punishes damage where the view is already good. MONAI is installed with fmc: its BasicUNet is
the default network (conf/model/monai_basicunet.yaml).

A new network is one builder registered here (or an entry point of group ``fmc.networks`` in
another package) and one ``conf/model/<name>.yaml``. The builder takes the settings of
:data:`NETWORK_SETTINGS` it names in its signature (``in_channels`` and ``out_channels`` at
least), and its own arguments from ``model.network_kwargs``; a rule between settings that the
signature cannot say (a fixed depth) is its ``check``.
"""

from __future__ import annotations

import torch
from torch import nn

from fmc.core.named_choices import Registry
from fmc.models.unet3d import UNet3D, _group_count, make_out_activation, start_as_identity

NETWORKS = Registry("network", "model.network", "conf/model/<name>.yaml", group="fmc.networks",
                    arguments_key="model.network_kwargs", arguments_where="conf/model/{name}.yaml")
# What FusionModule gives every network (a builder takes those it names); model.network_kwargs
# holds the rest.
NETWORK_SETTINGS = ("in_channels", "out_channels", "features", "depth", "norm", "negative_slope",
                    "out_activation", "residual")
# BasicUNet has four fixed downsamplings; SegResNet takes depth + 1 stages (at most 4 here).
BASICUNET_DEPTH = 4
SEGRESNET_BLOCKS_DOWN = (1, 2, 2, 4)


def basicunet_depth(depth: int) -> None:
    """BasicUNet's rule: exactly :data:`BASICUNET_DEPTH` downsamplings."""
    if int(depth) != BASICUNET_DEPTH:
        raise ValueError(f"model.depth={depth}: monai_basicunet has {BASICUNET_DEPTH} fixed "
                         f"downsamplings; set model.depth={BASICUNET_DEPTH}")


def segresnet_depth(depth: int) -> None:
    """SegResNet's rule: 1 to ``len(SEGRESNET_BLOCKS_DOWN) - 1`` downsamplings."""
    if not 1 <= int(depth) <= len(SEGRESNET_BLOCKS_DOWN) - 1:
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
        # BasicUNet's depth is fixed whatever ``depth`` says (the config check refuses another).
        self.depth = BASICUNET_DEPTH if network == "monai_basicunet" else int(depth)
        self.in_channels, self.residual = in_channels, bool(residual)
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


def _basicunet(in_channels: int, out_channels: int, features: int, depth: int, norm: str,
               negative_slope: float, out_activation: str, residual: bool) -> MonaiNetwork:
    """MONAI's BasicUNet (two convolutions per level, four fixed downsamplings): the default."""
    return MonaiNetwork("monai_basicunet", in_channels, out_channels, features, depth, norm,
                        negative_slope, out_activation, residual)


def _segresnet(in_channels: int, out_channels: int, features: int, depth: int, norm: str,
               negative_slope: float, out_activation: str, residual: bool) -> MonaiNetwork:
    """MONAI's SegResNet (residual blocks; its depth is the number of downsamplings)."""
    return MonaiNetwork("monai_segresnet", in_channels, out_channels, features, depth, norm,
                        negative_slope, out_activation, residual)


NETWORKS.register("unet3d", UNet3D)
NETWORKS.register("monai_basicunet", _basicunet, check=basicunet_depth)
NETWORKS.register("monai_segresnet", _segresnet, check=segresnet_depth)


def network_settings(network: str, settings: dict) -> dict:
    """The settings of :data:`NETWORK_SETTINGS` that the builder ``network`` names (all of
    them when it takes ``**kwargs``)."""
    if NETWORKS.takes_any(network):
        return dict(settings)
    taken = NETWORKS.parameters(network)
    return {key: value for key, value in settings.items() if key in taken}


def check_network(network: str, settings: dict, network_kwargs: dict | None = None) -> None:
    """The config's network: a known name, arguments it takes, its rule (e.g. the depth).

    Raises
    ------
    FmcConfigError
        One line naming the key, the valid values and the file.
    """
    NETWORKS.check_arguments(network, network_kwargs or {}, reserved=NETWORK_SETTINGS)
    NETWORKS.check(network, {**settings, **(network_kwargs or {})})


def build_network(network: str, network_kwargs: dict | None = None, **settings) -> nn.Module:
    """The network called ``network`` (a name of :data:`NETWORKS`), built from the ``settings``
    it takes and its own ``network_kwargs`` (checked by :func:`check_network`, once, with the
    config)."""
    builder = NETWORKS.get(network)
    return builder(**network_settings(network, settings), **(network_kwargs or {}))
