"""Weight averaging during training (``model.averaging``): one model that behaves like several.

A network's weights wander from step to step; where the run stops, or which validation it
happened to win, decides which of many near-equal models is kept -- and on a study the model
never saw, those models differ most (docs/benchmarks.md, "The spread over seeds"). An exponential
moving average of the weights (``ema``) is a running mean over the last few hundred steps: the
ensemble of the run's recent models folded into one network, at no cost at prediction.

How fmc uses it (:class:`fmc.models.module.FusionModule`):

* the average is updated after every optimizer step;
* whole-volume validation, patch validation and the test judge the **averaged** weights;
* a checkpoint's ``state_dict`` holds the averaged weights, so that ``fmc.predict``,
  ``fmc.challenge``, exports and the registry use them without any flag; the weights being
  trained travel beside them (``TRAINED_WEIGHTS_KEY``) so that ``ckpt=last`` resumes the run
  exactly.

The averagers are named choices (:data:`AVERAGINGS`, entry point group ``fmc.averagings``): a
builder takes its settings (``model.averaging_kwargs``) and returns an object with ``update``,
``state`` and ``load_state`` (see :class:`ExponentialAverage`), or None for no averaging.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fmc.core.named_choices import Registry

# Checkpoint keys beside Lightning's: the weights being trained (the state_dict holds the
# average), and the averager's own state.
TRAINED_WEIGHTS_KEY = "fmc_trained_state_dict"
AVERAGE_STATE_KEY = "fmc_weight_average"

AVERAGINGS = Registry("weight averaging", "model.averaging", "conf/model/unet3d.yaml",
                      group="fmc.averagings", arguments_key="model.averaging_kwargs")


class ExponentialAverage:
    """An exponential moving average of a network's weights.

    After update ``n`` (counting from 0) the average moves toward the current weights by
    ``1 - d`` with ``d = min(decay, 1 - 1 / (1 + span * (n + 1)))``: while the run is young the
    average spans about ``span`` of the steps made so far (the first update copies the weights,
    so the random start is not averaged in); later it spans about ``1 / (1 - decay)`` steps.
    With the default ``span`` of 1/9, ``d = (1 + n) / (10 + n)``. Floating-point tensors are
    averaged, integer buffers (counters) copied.

    Parameters
    ----------
    decay : float
        The largest weight of the old average, in (0, 1).
    span : float
        The share of the steps so far that the warm-up average spans, in (0, 1]; 1 spans every
        step made so far, close to their plain mean (until ``decay`` takes over).
    """

    def __init__(self, decay: float = 0.999, span: float = 1.0 / 9.0):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"model.averaging_kwargs.decay={decay}: must lie between 0 and 1")
        if not 0.0 < float(span) <= 1.0:
            raise ValueError(f"model.averaging_kwargs.span={span}: must lie in (0, 1]")
        self.decay = float(decay)
        self.span = float(span)
        self.updates = 0
        self.average: dict[str, torch.Tensor] = {}

    def weight_of_old(self) -> float:
        """The old average's weight in the next update."""
        return min(self.decay, 1.0 - 1.0 / (1.0 + self.span * (self.updates + 1.0)))

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        """Fold ``network``'s current weights into the average."""
        old = self.weight_of_old()
        averaged, current = [], []
        for name, value in network.state_dict().items():
            kept = self.average.get(name)
            if kept is None or not value.is_floating_point():
                self.average[name] = value.detach().clone()
            else:
                averaged.append(kept)
                current.append(value.detach().to(kept.dtype))
        if averaged:
            # One fused call over every tensor instead of one lerp each (torch's optimizers use
            # the same foreach ops); its cost per step: docs/benchmarks.md, "Throughput".
            torch._foreach_lerp_(averaged, current, 1.0 - old)
        self.updates += 1

    def state(self) -> dict:
        """What a checkpoint keeps of the averager (its weights go in the state_dict)."""
        return {"updates": self.updates, "decay": self.decay, "span": self.span}

    def load_state(self, state: dict, average: dict[str, torch.Tensor]) -> None:
        """Resume from :meth:`state` and the averaged weights."""
        self.updates = int(state.get("updates", 0))
        self.average = {name: value.detach().clone() for name, value in average.items()}


@AVERAGINGS.register("none")
def no_averaging() -> None:
    """The weights as trained (validation, checkpoints and prediction use the last step's)."""
    return None


@AVERAGINGS.register("ema")
def exponential_moving_average(decay: float = 0.999, span: float = 1.0 / 9.0
                               ) -> ExponentialAverage:
    """A moving average of the weights, validated, saved and predicted in their place.

    It spans about ``1/(1-decay)`` steps; early in a run, ``span`` of the steps made so far
    (:class:`ExponentialAverage`)."""
    return ExponentialAverage(decay, span)


def build_averager(name: str, kwargs: dict | None = None):
    """The averager called ``name`` with ``kwargs`` (None for ``none``)."""
    return AVERAGINGS.get(name)(**(kwargs or {}))


@contextmanager
def weights_swapped(network: torch.nn.Module, weights: dict[str, torch.Tensor] | None
                    ) -> Iterator[None]:
    """``network`` holds ``weights`` inside the block and its own weights again after it.

    The tensors are copied in place, so a memory format, a device or a compiled wrapper that
    shares the parameters stay as they are. ``weights`` None or empty: nothing changes.
    """
    if not weights:
        yield
        return
    own = {name: value.detach().clone() for name, value in network.state_dict().items()}
    network.load_state_dict(weights)
    try:
        yield
    finally:
        network.load_state_dict(own)
