"""A training bar over the whole run: steps done of the planned total, and the time left.

Lightning's own bars count the batches of one epoch ("Epoch 0: 12/100"), which says nothing
about when a run of 1000 such epochs, or of ``trainer.max_time``, ends. This bar counts optimizer
steps against the run's plan (``trainer.max_steps``, else ``max_epochs`` × steps per epoch) and,
when ``trainer.max_time`` bounds the run, shows the time left before that limit.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import Timer, TQDMProgressBar


def planned_steps(max_steps: int | None, max_epochs: int | None, steps_per_epoch: float
                  ) -> int | None:
    """The run's planned optimizer steps: the smaller of ``max_steps`` and ``max_epochs`` ×
    ``steps_per_epoch`` (None when neither bounds it)."""
    bounds = []
    if max_steps is not None and max_steps > 0:
        bounds.append(int(max_steps))
    if max_epochs is not None and max_epochs > 0 and steps_per_epoch not in (None, float("inf")):
        bounds.append(int(max_epochs * steps_per_epoch))
    return min(bounds) if bounds else None


def time_left_text(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``) of a non-negative number of seconds."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class RunProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting the whole run's steps instead of one epoch's batches."""

    def on_train_start(self, trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        total = planned_steps(trainer.max_steps, trainer.max_epochs,
                              trainer.num_training_batches / max(1, trainer.accumulate_grad_batches))
        self.train_progress_bar.reset(total=total)
        self.train_progress_bar.initial = trainer.global_step  # a resumed run continues
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("train steps")
        if not sys.stdout.isatty():
            # A log file (SLURM, CI, a pipe) keeps every redraw: one line a minute is enough.
            self.train_progress_bar.mininterval = 60.0
        if _timer(trainer) is not None:
            # tqdm's own estimate assumes the step total is reached; max_time may end it first,
            # and the postfix shows what it leaves.
            self.train_progress_bar.bar_format = (
                "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        pass  # one bar for the run: no reset per epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        step = trainer.global_step
        if step - bar.n >= self.refresh_rate or step == bar.total:
            bar.set_postfix(self.postfix(trainer, pl_module), refresh=False)
            bar.update(step - bar.n)  # redraws at most every mininterval seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.postfix(trainer, pl_module))

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)  # it writes Lightning's postfix: ours again
        if trainer.state.fn == "fit" and self.train_progress_bar is not None \
                and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.postfix(trainer, pl_module))

    def postfix(self, trainer, pl_module) -> dict:
        """The bar's right side: the run's metrics and, with ``trainer.max_time``, the time left."""
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics = {key: value for key, value in metrics.items() if key.endswith("loss_step")
                   or key.startswith("val/volume_n_ssim")}
        timer = _timer(trainer)
        if timer is not None:
            # Lightning's Timer: what trainer.max_time leaves (validation time counts too).
            metrics["max_time left"] = time_left_text(timer.time_remaining("train"))
        return metrics


def _timer(trainer) -> Timer | None:
    """Lightning's Timer when ``trainer.max_time`` bounds the run."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer if timer is not None and timer.time_remaining("train") is not None else None
