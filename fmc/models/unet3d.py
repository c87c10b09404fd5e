"""The 3D U-Net that maps one light-sheet view (plus auxiliary channels) to a fused volume.

With ``depth=3, features=16, norm="instance", in_channels=2, out_channels=1`` this is RWTH-GE's
network (RWTH-GE ``module_UNet3D``; spec §3.1), layer for layer, with 1,981,145 parameters:

=========  ===========================================================  =====================
stage      layers (every conv is followed by norm and LeakyReLU(0.2))  channels (f = 16)
=========  ===========================================================  =====================
enc 0      conv3, conv3                                                 in → f/2 → f
down k     conv k4 s2 p1 (halves every axis)                            w → w
enc k      conv3, conv3 (k = depth is the bottleneck)                   w → w → 2w
up k       ConvTranspose3d k3 s2 p1 op1 (doubles every axis), conv1×1   2w → 2w → 2w
dec k      concat(up k, enc k) → conv3, conv3                           3w → w → w
head       conv3, conv3, conv1×1 (no norm, no LeakyReLU), activation    f → f → f → out
=========  ===========================================================  =====================

where ``w = f·2**k`` is the width of encoder level ``k``.

Parameter count (why 1,981,145): every conv and transposed conv has a bias, and RWTH-GE's
InstanceNorm3d has ``affine=False``, so norms add no parameters and the count cannot tell where
they sit. The count alone fixes the kernel sizes and widths: with k4 downsamplers, k3 transposed
convs, 1×1 convs after each upsampler and a k3-k3-k1 head the sum is exactly 1,981,145 (e.g. k2
downsamplers or dropping the up-path 1×1 convs would give another number). Norm placement then
follows RWTH-GE's table (spec §3.1, "each conv → norm → LReLU"): the transposed convs, the
up-path 1×1 convs and the two k3 head convs all carry norm + LeakyReLU; only the last 1×1 does not.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("instance", "group", "batch", "none")
OUT_ACTIVATIONS = ("none", "relu", "leakyrelu", "sigmoid", "tanh", "hardtanh")
MAX_DEPTH = 6


def _group_count(channels: int) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor ≤ 8 leaving ≥ 2 channels a group.

    Eight groups is the usual choice for small 3D U-Nets; one channel per group would just be an
    affine instance norm, so groups keep at least two channels where the width allows it.
    """
    candidates = [g for g in range(1, 9) if channels % g == 0 and channels // g >= 2]
    return max(candidates) if candidates else 1


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build the normalisation layer named ``kind`` for ``channels`` feature maps.

    Parameters
    ----------
    kind : str
        One of ``NORMS``: ``"instance"`` (RWTH-GE's: no affine, no running statistics),
        ``"group"`` (affine GroupNorm), ``"batch"`` (BatchNorm3d) or ``"none"`` (identity).
    channels : int
        Number of channels the layer normalises.

    Returns
    -------
    torch.nn.Module
    """
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=False, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(_group_count(channels), channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r} is not valid; choose one of {', '.join(NORMS)}")


def make_out_activation(kind: str, negative_slope: float = 0.2) -> nn.Module:
    """Build the output activation named ``kind`` (one of ``OUT_ACTIVATIONS``).

    ``"hardtanh"`` clips to [0, 1], as RWTH-GE's did; ``"none"`` gives an unbounded regression.
    """
    table = {
        "none": nn.Identity,
        "relu": nn.ReLU,
        "leakyrelu": lambda: nn.LeakyReLU(negative_slope),
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "hardtanh": lambda: nn.Hardtanh(0.0, 1.0),
    }
    if kind not in table:
        raise ValueError(f"out_activation={kind!r} is not valid; choose one of {', '.join(OUT_ACTIVATIONS)}")
    return table[kind]()


def _conv_norm_act(conv: nn.Module, channels: int, norm: str, negative_slope: float) -> nn.Sequential:
    # In-place LeakyReLU is safe right after a norm (or a conv) and saves one activation-sized buffer.
    return nn.Sequential(conv, make_norm(norm, channels), nn.LeakyReLU(negative_slope, inplace=True))


def _double_conv(c_in: int, c_mid: int, c_out: int, norm: str, slope: float) -> nn.Sequential:
    return nn.Sequential(
        _conv_norm_act(nn.Conv3d(c_in, c_mid, 3, padding=1), c_mid, norm, slope),
        _conv_norm_act(nn.Conv3d(c_mid, c_out, 3, padding=1), c_out, norm, slope),
    )


def start_as_identity(last_conv: nn.Conv3d) -> None:
    """Zero a residual network's final convolution: it then returns the view it is given."""
    nn.init.zeros_(last_conv.weight)
    if last_conv.bias is not None:
        nn.init.zeros_(last_conv.bias)


def _check_settings(in_channels: int, out_channels: int, features: int, depth: int, norm: str,
                    out_activation: str, residual: bool) -> None:
    """Raise ValueError naming the first setting :class:`UNet3D` cannot take."""
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("out_channels", out_channels, minimum=1)
    _check_int("features", features, minimum=2)
    if features % 2:
        raise ValueError(f"features={features} is not valid; it must be even "
                         f"(the first conv has features/2 channels)")
    _check_int("depth", depth, minimum=1, maximum=MAX_DEPTH)
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not valid; choose one of {', '.join(NORMS)}")
    if out_activation not in OUT_ACTIVATIONS:
        raise ValueError(f"out_activation={out_activation!r} is not valid; "
                         f"choose one of {', '.join(OUT_ACTIVATIONS)}")
    if not isinstance(residual, bool):
        raise ValueError(f"residual={residual!r} is not valid; it must be True or False")


class UNet3D(nn.Module):
    """3D U-Net with strided-conv downsampling and transposed-conv upsampling.

    Parameters
    ----------
    in_channels : int
        Input channels: the view first (channel 0), then auxiliary maps (e.g. surface distance).
    out_channels : int
        Output channels (1: the fused intensity).
    features : int
        Width ``f`` of the first level (even, ≥ 2); every level below doubles it.
    depth : int
        Number of down/up stages (1 to ``MAX_DEPTH``); patch sides must be multiples of ``2**depth``.
    norm : str
        One of ``NORMS``; RWTH-GE used ``"instance"``.
    negative_slope : float
        Slope of the LeakyReLU after every hidden conv (RWTH-GE's 0.2).
    out_activation : str
        One of ``OUT_ACTIVATIONS``, applied to the final output.
    residual : bool
        If true the output is ``input[:, 0] + network(input)`` (before ``out_activation``): the
        network learns a correction to the view, which is a strong prior wherever the view is
        already good (docs/design.md §6). The last 1×1 conv starts at zero, so a new residual
        network is the identity.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, features: int = 16, depth: int = 3,
                 norm: str = "instance", negative_slope: float = 0.2, out_activation: str = "none",
                 residual: bool = False) -> None:
        super().__init__()
        _check_settings(in_channels, out_channels, features, depth, norm, out_activation, residual)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.features, self.depth, self.norm = features, depth, norm
        self.residual = residual

        slope = float(negative_slope)
        widths = [features * 2**k for k in range(depth + 1)]
        # Encoder: level 0 goes in → f/2 → f; level k widens w/2 → w/2 → w after a downsampler.
        encoders = [_double_conv(in_channels, features // 2, features, norm, slope)]
        downsamplers = []
        for k in range(1, depth + 1):
            w = widths[k - 1]
            downsamplers.append(_conv_norm_act(nn.Conv3d(w, w, 4, stride=2, padding=1), w, norm, slope))
            encoders.append(_double_conv(w, w, widths[k], norm, slope))
        # Decoder, deepest first: upsample 2w, concatenate the level's skip (w), reduce to w.
        upsamplers, decoders = [], []
        for k in reversed(range(depth)):
            w2 = widths[k + 1]
            upsamplers.append(nn.Sequential(
                _conv_norm_act(nn.ConvTranspose3d(w2, w2, 3, stride=2, padding=1, output_padding=1),
                               w2, norm, slope),
                _conv_norm_act(nn.Conv3d(w2, w2, 1), w2, norm, slope),
            ))
            decoders.append(_double_conv(w2 + widths[k], widths[k], widths[k], norm, slope))
        self.encoders = nn.ModuleList(encoders)
        self.downsamplers = nn.ModuleList(downsamplers)
        self.upsamplers = nn.ModuleList(upsamplers)
        self.decoders = nn.ModuleList(decoders)
        self.head = nn.Sequential(
            _conv_norm_act(nn.Conv3d(features, features, 3, padding=1), features, norm, slope),
            _conv_norm_act(nn.Conv3d(features, features, 3, padding=1), features, norm, slope),
            nn.Conv3d(features, out_channels, 1),  # no norm: the output keeps its own scale
        )
        self.out_activation = make_out_activation(out_activation, slope)
        if residual:
            # Start as the identity: N_SSIM punishes any damage where the view is already good,
            # so a residual model begins at "return the view" and learns only the corrections
            # (with random weights it started at a patch N_SSIM of -4.5 on the demo data).
            start_as_identity(self.last_conv)

    @property
    def required_divisor(self) -> int:
        """Every spatial side of the input must be a multiple of this (``2**depth``)."""
        return 2**self.depth

    @property
    def last_conv(self) -> nn.Conv3d:
        """The final 1×1 conv (zero it to make a residual network the identity)."""
        return self.head[-1]

    def check_input_shape(self, shape: tuple[int, ...] | torch.Size) -> None:
        """Raise ``ValueError`` unless ``shape`` is (N, in_channels, D, H, W) with sides divisible."""
        if len(shape) != 5:
            raise ValueError(f"UNet3D expects a 5D input (N, C, D, H, W); got shape {tuple(shape)}")
        if shape[1] != self.in_channels:
            raise ValueError(f"UNet3D was built with in_channels={self.in_channels}; "
                             f"the input has {shape[1]} channels (shape {tuple(shape)})")
        divisor = self.required_divisor
        spatial = tuple(int(s) for s in shape[2:])
        if any(s % divisor for s in spatial):
            raise ValueError(f"the patch {spatial} (D, H, W) must be a multiple of 2**depth = {divisor} "
                             f"per axis (depth={self.depth}); change the patch size or the depth")
        if self.norm == "instance" and all(s == divisor for s in spatial):
            # The bottleneck would be 1×1×1, where instance statistics are undefined.
            raise ValueError(f"the patch {spatial} is too small for instance norm at depth={self.depth}: "
                             f"at least one side must be larger than {divisor}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict the fused volume, same spatial shape as ``x``: (N, out_channels, D, H, W)."""
        self.check_input_shape(x.shape)
        skips = []
        h = x
        for k, encoder in enumerate(self.encoders):
            h = encoder(h)
            if k < self.depth:
                skips.append(h)
                h = self.downsamplers[k](h)
        for upsampler, decoder in zip(self.upsamplers, self.decoders, strict=True):
            h = decoder(torch.cat((upsampler(h), skips.pop()), dim=1))
        out = self.head(h)
        if self.residual:
            out = out + x[:, :1]  # broadcasts channel 0 over out_channels
        return self.out_activation(out)


def _check_int(key: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f"an integer ≥ {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise ValueError(f"{key}={value!r} is not valid; it must be {bound}")
