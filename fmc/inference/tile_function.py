"""What an exported network computes on one tile: the checkpoint's network and, with a confidence
head, the view blended toward its prediction (:func:`fmc.models.module.confidence_blend`).

Plain torch, no Lightning: TorchScript and ONNX exports trace :class:`TileFunction`
(:mod:`fmc.inference.export`); a BioImage Model Zoo package traces :class:`ZooTileFunction` and
carries this module's source in its architecture file, where :class:`FmcZooNetwork` rebuilds it
from the package's keyword arguments (:mod:`fmc.inference.zoo_architecture`). So every export runs
the code that fmc runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmc.models.module import confidence_blend
from fmc.models.networks import build_network


class TileFunction(nn.Module):
    """``net`` on a tile ``(N, C, Z, Y, X)`` of the checkpoint's channels; with ``confidence``
    (a confidence head: prediction and logit) the blend toward the view, as the module's forward."""

    def __init__(self, net: nn.Module, confidence: bool) -> None:
        super().__init__()
        self.net = net
        self.confidence = bool(confidence)

    @classmethod
    def of_module(cls, module) -> TileFunction:
        """The tile function of a :class:`fmc.models.module.FusionModule` (its network, shared)."""
        return cls(module.net, module.hparams.get("confidence", "none") == "head")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.net(inputs)
        if not self.confidence:
            return out
        return confidence_blend(inputs, out, self.net.residual)[0]


class ZooTileFunction(nn.Module):
    """``tile`` with the zoo's inputs: the normalised view, then each distance channel in µm, one
    tensor each (``tanh(d / scale)`` done here, ``scales`` in input order)."""

    def __init__(self, tile: TileFunction, scales: Sequence[float]) -> None:
        super().__init__()
        self.tile = tile
        self.scales = [float(s) for s in scales]

    def forward(self, raw: torch.Tensor, *distances: torch.Tensor) -> torch.Tensor:
        scaled = [torch.tanh(d / s) for d, s in zip(distances, self.scales, strict=True)]
        return self.tile(torch.cat([raw, *scaled], dim=1))


class FmcZooNetwork(ZooTileFunction):
    """The zoo package's callable: ``build_network(**network)`` as a :class:`ZooTileFunction`
    (its keyword arguments: :func:`fmc.inference.zoo_architecture.architecture_kwargs`)."""

    def __init__(self, network: dict, confidence: bool, scales: Sequence[float]) -> None:
        super().__init__(TileFunction(build_network(**network), confidence), scales)
