"""The 3D U-Net: RWTH-GE's exact architecture, shapes, options, and the residual identity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmc.models.unet3d import NORMS, OUT_ACTIVATIONS, UNet3D


def test_seed_configuration_has_the_seed_parameter_count():
    model = UNet3D(in_channels=2, out_channels=1, features=16, depth=3, norm="instance")
    assert sum(p.numel() for p in model.parameters()) == 1_981_145


def test_seed_configuration_layer_layout():
    model = UNet3D()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    transposed = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(convs) == 23 and len(transposed) == 3
    # Every conv carries a norm except the final 1×1; RWTH-GE's norms have no affine parameters.
    assert len(norms) == len(convs) + len(transposed) - 1
    assert all(not n.affine and not n.track_running_stats for n in norms)
    assert [d[0].kernel_size for d in model.downsamplers] == [(4, 4, 4)] * 3
    assert model.last_conv.kernel_size == (1, 1, 1) and model.last_conv.out_channels == 1
    assert model.required_divisor == 8


@pytest.mark.parametrize("kwargs, shape", [
    ({}, (1, 2, 16, 32, 32)),
    ({"in_channels": 1, "features": 8, "depth": 2}, (1, 1, 16, 16, 16)),
    ({"in_channels": 3, "out_channels": 2, "features": 4, "depth": 1}, (2, 3, 8, 6, 10)),
])
def test_output_has_the_input_spatial_shape(kwargs, shape):
    model = UNet3D(**kwargs)
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], model.out_channels, *shape[2:])


def test_non_divisible_patch_is_rejected_with_a_clear_message():
    model = UNet3D(in_channels=1, features=4, depth=3)
    with pytest.raises(ValueError, match=r"multiple of 2\*\*depth = 8"):
        model(torch.randn(1, 1, 16, 20, 16))


def test_wrong_channel_count_and_rank_are_rejected():
    model = UNet3D(in_channels=2, features=4, depth=1)
    with pytest.raises(ValueError, match="in_channels=2"):
        model(torch.randn(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="5D"):
        model(torch.randn(2, 4, 4, 4))


def test_instance_norm_bottleneck_of_one_voxel_is_rejected():
    model = UNet3D(in_channels=1, features=4, depth=2)
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 1, 4, 4, 4))


@pytest.mark.parametrize("norm", NORMS)
def test_each_norm_builds_runs_and_backpropagates(norm):
    model = UNet3D(in_channels=1, features=4, depth=2, norm=norm)
    out = model(torch.randn(2, 1, 8, 8, 8))
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("activation", OUT_ACTIVATIONS)
def test_each_out_activation_builds_and_bounds_the_output(activation):
    model = UNet3D(in_channels=1, features=4, depth=1, out_activation=activation)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 4, 4, 4) * 10)
    low, high = {"relu": (0, None), "sigmoid": (0, 1), "tanh": (-1, 1), "hardtanh": (0, 1)}.get(
        activation, (None, None))
    assert low is None or out.min() >= low
    assert high is None or out.max() <= high


@pytest.mark.parametrize("out_channels", [1, 2])
def test_residual_network_with_a_zero_last_conv_is_the_identity(out_channels):
    model = UNet3D(in_channels=2, out_channels=out_channels, features=4, depth=2, residual=True)
    nn.init.zeros_(model.last_conv.weight)
    nn.init.zeros_(model.last_conv.bias)
    x = torch.randn(1, 2, 8, 8, 12)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out, x[:, :1].expand_as(out))


@pytest.mark.parametrize("key, value, fragment", [
    ("norm", "layer", "norm='layer'"),
    ("out_activation", "softmax", "out_activation='softmax'"),
    ("depth", 0, "depth=0"),
    ("features", 5, "features=5"),
    ("in_channels", 0, "in_channels=0"),
    ("residual", "yes", "residual='yes'"),
])
def test_invalid_kwargs_name_the_key(key, value, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        UNet3D(**{key: value})


def test_invalid_norm_lists_the_valid_values():
    with pytest.raises(ValueError, match="instance, group, batch, none"):
        UNet3D(norm="layer")


def test_a_new_residual_network_is_the_identity():
    net = UNet3D(in_channels=2, features=4, depth=2, residual=True)
    x = torch.randn(1, 2, 8, 16, 16)
    assert torch.equal(net(x), x[:, :1])
