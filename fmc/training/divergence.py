"""Stop a training run at its first non-finite loss, and never save non-finite weights.

A diverged run (a learning rate far too high, an extreme value in the data, an overflow in
reduced precision) otherwise trains on with NaN weights, saves them as ``last.ckpt`` and fails
later with a message about a validation volume. :class:`StopOnNonFinite` checks the loss of
every step before its backward pass (so the weights are still those of the step before) and
every checkpoint's weights before it is written; either stops the run with one line naming the
step, the likely cause and the last checkpoint that was kept.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from fmc.core.errors import FmcError
from fmc.models.checkpoint import non_finite_tensors


class TrainingDivergedError(FmcError):
    """The loss or the weights became NaN or infinite: training cannot go on."""


class StopOnNonFinite(Callback):
    """Raise :class:`TrainingDivergedError` at the first non-finite loss or checkpoint weight.

    Parameters
    ----------
    checkpoint_folder : Path
        Where the run's checkpoints go (named in the message: the last one kept).
    """

    def __init__(self, checkpoint_folder: Path) -> None:
        self.checkpoint_folder = Path(checkpoint_folder)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        raise TrainingDivergedError(
            f"training diverged at step {trainer.global_step}: the loss is "
            f"{float(loss.detach().float().reshape(-1)[0])} ({self._cause(pl_module)}); "
            f"{self._kept()}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise TrainingDivergedError(
                f"training diverged by step {trainer.global_step}: {len(bad)} weight tensor(s) "
                f"hold NaN or infinite values (first: {bad[0]}; {self._cause(pl_module)}); "
                f"not saved; {self._kept()}")

    @staticmethod
    def _cause(pl_module) -> str:
        lr = pl_module.hparams.get("lr")
        return (f"likely a learning rate too high for this run, model.lr={lr}: lower it; or "
                "extreme values in a training volume")

    def _kept(self) -> str:
        kept = sorted(self.checkpoint_folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not kept:
            return "no checkpoint was saved before"
        return f"the last finite checkpoint is {kept[-1]}"
