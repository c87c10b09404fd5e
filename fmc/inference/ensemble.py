"""Several checkpoints as one model: the mean of their predictions, tile by tile.

``python -m fmc.predict ckpt=[a.ckpt,b.ckpt,c.ckpt]`` and a registry holding several models of
one study and content (a sweep over ``seed=0,1,2``, or several ``models.yaml`` entries) predict
with a :class:`ModelEnsemble`. Why: under leave-one-study-out, models that differ only by their
seed disagree most on studies none of them has seen, and the mean of their predictions is
steadier on such a study than any one of them (docs/benchmarks.md, "Averaging the seeds'
models"). The mean is taken per tile, before the Gaussian blend and before the input fallback,
so an ensemble costs one sliding window with N forward passes per tile.

The members must read the same network input (channels and distance scales); the rest of what
prediction needs comes from the first member, except:

* ``required_divisor``: the largest of the members' (each tile side must suit every network);
* ``change_limit`` (``fallback=calibrated``): the mean of the members' limits. Each limit is the
  99th percentile of its model's local change on volumes it knows; where the members agree the
  mean prediction changes as much as they do, so the mean limit keeps the calibration's meaning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from fmc.core.errors import FmcInputError

log = logging.getLogger(__name__)


class ModelEnsemble(torch.nn.Module):
    """The mean output of several :class:`fmc.models.module.FusionModule` (same inputs).

    Parameters
    ----------
    members : sequence of FusionModule
        At least two, in eval mode, on one device.
    sources : sequence of Path, optional
        Their checkpoint files (for messages).

    Raises
    ------
    FmcInputError
        If the members read different input channels or distance scales.
    """

    def __init__(self, members: Sequence, sources: Sequence[Path] | None = None):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        names = [Path(s) for s in sources] if sources else [Path(f"model {i}") for i in
                                                             range(len(members))]
        check_same_inputs(members, names)
        self.members = torch.nn.ModuleList(members)
        self.hparams = ensemble_hparams(members)

    @property
    def required_divisor(self) -> int:
        """Each tile side must be a multiple of this (the largest of the members')."""
        return max(int(m.required_divisor) for m in self.members)

    @property
    def compiled(self) -> bool:
        """Whether every member runs through ``torch.compile``."""
        return all(m.compiled for m in self.members)

    def compile_network(self) -> None:
        """Compile every member's network (see :meth:`FusionModule.compile_network`)."""
        for member in self.members:
            if not member.compiled:
                member.compile_network()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The members' outputs averaged (float32 accumulation, whatever the autocast dtype)."""
        total = None
        for member in self.members:
            out = member(inputs).float()
            total = out if total is None else total + out
        return total / len(self.members)


def check_same_inputs(members: Sequence, sources: Sequence[Path]) -> None:
    """Raise :class:`FmcInputError` unless every member takes the first one's network input."""
    first = members[0].hparams
    for member, source in zip(members[1:], sources[1:], strict=True):
        hp = member.hparams
        if list(hp.channels) != list(first.channels):
            raise FmcInputError(
                f"{source} takes the input channels {list(hp.channels)} but {sources[0]} takes "
                f"{list(first.channels)}: the models averaged together must take the same inputs")
        if dict(hp.get("channel_scales_um") or {}) != dict(first.get("channel_scales_um") or {}):
            raise FmcInputError(
                f"{source} scales its distance channels by {dict(hp.get('channel_scales_um'))} "
                f"but {sources[0]} by {dict(first.get('channel_scales_um'))}: the models "
                "averaged together must take the same inputs")


def ensemble_hparams(members: Sequence):
    """The first member's hyper-parameters, with the members' mean ``change_limit``."""
    from lightning.fabric.utilities.data import AttributeDict

    hparams = AttributeDict(dict(members[0].hparams))
    limits = [m.hparams.get("change_limit") for m in members]
    limits = [float(v) for v in limits if v is not None]
    hparams["change_limit"] = sum(limits) / len(limits) if limits else None
    fallbacks = {str(m.hparams.get("fallback") or "none") for m in members}
    if len(fallbacks) > 1:
        log.warning("the averaged models store different fallbacks (%s); the first one's (%s) is "
                    "used unless fallback= says otherwise", ", ".join(sorted(fallbacks)),
                    hparams.get("fallback"))
    return hparams


def load_models(paths: Sequence[str | Path], device: str = "cpu"):
    """One checkpoint's model, or the :class:`ModelEnsemble` of several (each loaded as data).

    Raises
    ------
    FmcInputError
        If a checkpoint cannot be used (:func:`fmc.models.checkpoint.load_fusion_module`), the same
        file is named twice, or the models take different inputs.
    """
    from fmc.models.checkpoint import load_fusion_module

    paths = [Path(p) for p in paths]
    if not paths:
        raise FmcInputError("ckpt=[]: name at least one checkpoint")
    seen = set()
    for path in paths:
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as error:  # a symbolic-link loop, a path too long
            raise FmcInputError(f"ckpt={path}: cannot resolve it ({error})") from None
        if resolved in seen:
            raise FmcInputError(f"ckpt: {path} is named twice (an ensemble averages different "
                                "models)")
        seen.add(resolved)
    models = [load_fusion_module(path, device) for path in paths]
    return models[0] if len(models) == 1 else ModelEnsemble(models, paths).eval()
