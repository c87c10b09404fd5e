"""The optimizers (``model.optimizer``) and learning-rate schedules (``model.scheduler``) by name.

Two registries (:class:`fmc.core.named_choices.Registry`), extended by other packages through
the entry point groups ``fmc.optimizers`` and ``fmc.schedulers``:

- an optimizer builder takes the parameters, ``lr`` and ``weight_decay`` and returns a
  ``torch.optim.Optimizer`` (torch's classes are registered as they are);
- a schedule builder takes the optimizer (and ``total_steps``, the run's optimiser steps, if
  its signature names it) and returns Lightning's ``lr_scheduler`` entry (a dict with
  ``scheduler``) or None for a constant rate.
"""

from __future__ import annotations

import torch

from fmc.core.named_choices import Registry

OPTIMIZERS = Registry("optimizer", "model.optimizer", "conf/model/unet3d.yaml",
                      group="fmc.optimizers")
OPTIMIZERS.register("radam", torch.optim.RAdam)
OPTIMIZERS.register("adam", torch.optim.Adam)
OPTIMIZERS.register("adamw", torch.optim.AdamW)

SCHEDULERS = Registry("scheduler", "model.scheduler", "conf/model/unet3d.yaml",
                      group="fmc.schedulers")


@SCHEDULERS.register("none")
def constant(optimizer: torch.optim.Optimizer) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> dict:
    """Cosine decay to zero over the run's steps, stepped every optimiser step."""
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))
    return {"scheduler": scheduler, "interval": "step"}


@SCHEDULERS.register("plateau")
def plateau(optimizer: torch.optim.Optimizer) -> dict:
    """Halve the rate when ``val/n_ssim`` has not risen for 10 validations."""
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                           patience=10)
    return {"scheduler": scheduler, "monitor": "val/n_ssim", "interval": "epoch"}


def build_optimization(parameters, optimizer: str, lr: float, weight_decay: float,
                       scheduler: str, total_steps) -> object:
    """What ``configure_optimizers`` returns: the optimizer, or it with its schedule.

    ``total_steps`` is a function giving the run's optimiser steps, called only for a schedule
    whose builder names ``total_steps``.
    """
    built = OPTIMIZERS.get(optimizer)(parameters, lr=lr, weight_decay=weight_decay)
    extra = {"total_steps": total_steps()} if "total_steps" in SCHEDULERS.parameters(
        scheduler) else {}
    schedule = SCHEDULERS.get(scheduler)(built, **extra)
    return built if schedule is None else {"optimizer": built, "lr_scheduler": schedule}
