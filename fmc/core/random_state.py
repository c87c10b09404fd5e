"""Random generator states in checkpoints, so that a resumed training run draws what it would have.

Lightning restores weights, optimizer and loop counters on resume but not the random
generators, and fmc draws its training patches from torch's global generator
(:mod:`fmc.data.dataset`): without their state a resumed run draws other patches than an
uninterrupted one. :class:`RandomState` (added to every run by :mod:`fmc.training.fit`) keeps them;
a run killed and resumed with ``ckpt=last`` then ends with the uninterrupted run's weights
on the same machine and settings (tests/test_reliability.py).

A class at module level, not inside a function: ``ddp_spawn`` pickles the trainer's callbacks.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Store torch's, NumPy's and Python's generator states in checkpoints; restore on resume.

    A state saved at the end of an epoch (``last.ckpt``) is applied when the next epoch starts:
    Lightning, resuming from it, first replays the end of the saved epoch and draws on the way.
    A state saved mid-epoch is applied at once.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None
        self.at_epoch_end = False

    @property
    def state_key(self) -> str:
        return "fmc.RandomState"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.pending is not None:
            set_random_states(self.pending)
            self.pending = None
        self.at_epoch_end = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the checkpoint callbacks' own epoch-end saves (Lightning orders
        # ModelCheckpoint last), so their checkpoints know they were taken at an epoch's end.
        self.at_epoch_end = True

    def state_dict(self) -> dict[str, Any]:
        if self.pending is not None:  # saved again while Lightning replays: keep the true state
            return self.pending
        return {**random_states(), "epoch_end": self.at_epoch_end}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("epoch_end"):
            self.pending = state_dict
        else:
            set_random_states(state_dict)


def random_states() -> dict[str, Any]:
    """torch's, NumPy's and Python's generator states as tensors and plain values.

    Plain values because checkpoints must load with ``weights_only=True``.
    """
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                        "position": int(position), "has_gauss": int(has_gauss),
                        "cached_gaussian": float(cached)},
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what :func:`random_states` returned (CUDA states only on as many devices)."""
    torch.set_rng_state(states["torch"])
    saved = states["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32),
                         saved["position"], saved["has_gauss"], saved["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and \
            len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
