"""Clocks of a training run: how long its loop ran (``train_seconds`` and ``seconds_per_step`` in
``metrics.json``) and what its whole-volume validation cost (:class:`Stopwatch`).

From the first training step to the end of training (validation, checkpoints and logging
included, start-up and the final test scoring not), so that runs, and fmc against a bare loop
(``scripts/bench_step.py``), compare by the time an optimizer step really costs.
"""

from __future__ import annotations

import time

import lightning as L


class TrainClock(L.Callback):
    """Measure the training loop's wall time and the steps it made."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None
        self.first_step = 0
        self.steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started is not None:
            self.seconds = time.perf_counter() - self.started
            self.steps = trainer.global_step - self.first_step

    def summary(self) -> dict[str, float]:
        """``{"train_seconds": ..., "seconds_per_step": ...}`` (empty before training ended)."""
        if self.seconds is None:
            return {}
        per_step = self.seconds / self.steps if self.steps else float("nan")
        return {"train_seconds": round(self.seconds, 3), "seconds_per_step": per_step}


class Stopwatch:
    """Seconds spent in a block, accumulated (what whole-volume validation costs a run)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start
