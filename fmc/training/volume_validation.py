"""Whole-volume validation during training, by the challenge's own score (``val/volume_n_ssim``).

Every ``every_n_steps`` optimizer steps or ``every_minutes`` minutes of training (whichever
comes first), and once more when training ends (so the last weights of a run stopped by
``trainer.max_time`` are judged too), the callback predicts the validation volumes with the
streaming sliding window and scores them with the challenge N_SSIM
(:mod:`fmc.evaluation.volume_scoring`). With ``select=True`` it keeps the best weights as
``checkpoints/best-step<N>-vnssim<score>.ckpt`` (the previous best is removed; ``keep`` > 1
keeps that many of the best-scoring validations' weights, -1 all), which is what
``fmc.predict``, the registry and ``fmc.report`` then pick (the highest score:
:func:`fmc.models.checkpoint.selected_checkpoint`).

The cost is logged as ``val/volume_seconds`` (cumulative) and counts in ``trainer.max_time``:
a run that validates more trains less, as it should for a fair comparison at equal time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch

from fmc.core.logs import plural
from fmc.evaluation.volume_scoring import score_h5_pairs, scoring_settings, summarize_scores
from fmc.models.checkpoint import best_checkpoint_name
from fmc.training.clock import Stopwatch

log = logging.getLogger(__name__)

METRIC = "val/volume_n_ssim"
HISTORY_FILE = "volume_validation.json"


def evaluation_weights(module: L.LightningModule):
    """The module's :meth:`~fmc.models.module.FusionModule.evaluation_weights` block (the
    averaged weights under ``model.averaging``), or an empty block for other modules."""
    return getattr(module, "evaluation_weights", nullcontext)()


class VolumeValidation(L.Callback):
    """Score whole validation volumes every N steps or minutes; optionally keep the best weights.

    Parameters
    ----------
    pairs : sequence of (angle_h5, fused_h5)
        Validation pairs (prepared by ``fmc.prepare``).
    every_n_steps : int, optional
        Validate after this many optimizer steps since the last validation.
    every_minutes : float, optional
        Validate after this many minutes of training since the last validation (the clock
        starts with training; validation time itself is not counted towards the next one).
    at_end : bool
        Validate the final weights when training ends (unless just validated).
    select : bool
        Save the best-scoring weights to ``dirpath`` (else only log).
    keep : int
        With ``select``: how many of the best-scoring validations' weights stay in ``dirpath``
        (``callbacks.checkpoint.save_top_k``; -1: every validation's).
    dirpath : path
        The run's ``checkpoints/`` folder.
    overlap, batch_size : float, int
        Sliding-window settings (as ``fmc.predict``).
    history_path : path, optional
        Where every validation is appended as JSON (step, seconds, score, per-volume scores).
    images_dir : path, optional
        Where a figure of the first validation volume goes at each validation
        (``step<N>.png``: XY and XZ max projections, input | prediction | target | difference);
        W&B loggers get it too (``val/volume``). None: no figure.
    image_panel_px : int
        The width of one panel of that figure.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], every_n_steps: int | None = None,
                 every_minutes: float | None = None, at_end: bool = True, select: bool = True,
                 dirpath: str | Path = "checkpoints", overlap: float = 0.5, batch_size: int = 4,
                 history_path: str | Path | None = None, images_dir: str | Path | None = None,
                 image_panel_px: int = 192, keep: int = 1):
        super().__init__()
        if keep == 0 or keep < -1:
            raise ValueError(f"keep must be -1 or a positive number of checkpoints, not {keep}")
        if every_n_steps is None and every_minutes is None and not at_end:
            raise ValueError("volume validation needs every_n_steps, every_minutes or at_end")
        self.pairs = [(Path(a), Path(f)) for a, f in pairs]
        self.every_n_steps = None if every_n_steps is None else max(1, int(every_n_steps))
        self.every_seconds = None if every_minutes is None else float(every_minutes) * 60.0
        self.at_end, self.select = bool(at_end), bool(select)
        self.dirpath = Path(dirpath)
        self.settings = scoring_settings(float(overlap), int(batch_size))
        self.history_path = None if history_path is None else Path(history_path)
        self.images_dir = None if images_dir is None else Path(images_dir)
        self.image_panel_px = int(image_panel_px)
        self.best_score: float | None = None
        self.best_path: Path | None = None
        self.keep = int(keep)
        self.kept: list[tuple[float, Path]] = []  # (score, file) of the weights kept
        self.history: list[dict] = []
        self.cost = Stopwatch()
        self._last_step = -1
        self._clock = 0.0

    # -- cadence ------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = time.perf_counter()
        self._last_step = trainer.global_step

    def _due(self, step: int) -> bool:
        if step <= self._last_step:
            return False
        if self.every_n_steps is not None and step - self._last_step >= self.every_n_steps:
            return True
        return self.every_seconds is not None and time.perf_counter() - self._clock >= self.every_seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        if self._due(trainer.global_step):
            self.validate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end and trainer.global_step > self._last_step:
            self.validate(trainer, pl_module)

    # -- the work -----------------------------------------------------------------------------
    def validate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """Score the validation volumes now; log, record and (if best) save the weights."""
        step = trainer.global_step
        score = float("nan")
        per_volume: dict[str, float] = {}
        summary: dict[str, float] = {}
        figure: list = []
        with self.cost:
            if trainer.is_global_zero:
                draw = self._figure_drawer(step, figure) if self.images_dir is not None else None
                # The weights a checkpoint saved now would hold (model.averaging: the average).
                with evaluation_weights(pl_module):
                    scores = score_h5_pairs(pl_module, self.pairs, self.settings,
                                            label=f"validation at step {step}", visit=draw)
                summary = summarize_scores(scores, METRIC)
                per_volume = {s.name: s.n_ssim for s in scores}
                score = summary.get(METRIC, float("nan"))
                if figure:
                    self._show_figure(trainer, step, score, *figure)
            # Every rank must agree on the score: checkpoint saving is collective under DDP.
            score = float(trainer.strategy.broadcast(score, src=0))
        self._last_step = step
        self._clock = time.perf_counter()
        summary.update({METRIC: score, "val/volume_seconds": self.cost.seconds})
        trainer.callback_metrics[METRIC] = torch.tensor(score)
        trainer.callback_metrics["val/volume_seconds"] = torch.tensor(self.cost.seconds)
        for logger in trainer.loggers:
            logger.log_metrics(summary, step=step)
        log.info("step %d: %s = %.4f (%s, %.0f s of validation so far)", step, METRIC,
                 score, plural(len(self.pairs), "volume"), self.cost.seconds)
        improved = score == score and (self.best_score is None or score > self.best_score)
        if improved:
            self.best_score = score
        if self.select and score == score and self._ranks(score):
            self._save_ranked(trainer, step, score, improved)
        self.history.append({"step": step, "score": score, "seconds": round(self.cost.seconds, 2),
                             "best": improved, "volumes": per_volume})
        if self.history_path is not None and trainer.is_global_zero:
            from fmc.core.files import write_text_atomic

            write_text_atomic(self.history_path, json.dumps(self.history, indent=1) + "\n")
        return score

    def _figure_drawer(self, step: int, figure: list):
        """A visitor for :func:`score_h5_pairs` that draws the first volume into ``figure``
        (while its prediction is in memory) as ``[array, caption]``."""
        def draw(index: int, angle_path: Path, fused_path: Path, prediction, volume) -> None:
            if index:
                return
            import h5py

            from fmc.evaluation.montage import volumes_figure
            from fmc.io.h5 import RAW_IMAGE, read_attrs

            caption = f"step {step}: {volume.name} N_SSIM {volume.n_ssim:+.4f}"
            spacing = read_attrs(angle_path).get("spacing_zyx")
            with h5py.File(angle_path, "r") as angle, h5py.File(fused_path, "r") as fused:
                figure.extend([volumes_figure(caption, [angle[RAW_IMAGE], prediction,
                                                        fused[RAW_IMAGE]],
                                              spacing, panel_px=self.image_panel_px), caption])
        return draw

    def _show_figure(self, trainer: L.Trainer, step: int, score: float, image, caption: str
                     ) -> None:
        """The figure into ``images_dir`` and to every W&B logger, the mean score captioned."""
        from fmc.io.png import write_png

        caption += f" (mean over {plural(len(self.pairs), 'volume')}: {score:+.4f})"
        write_png(self.images_dir / f"step{step:06d}.png", image)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="val/volume", images=[image], caption=[caption], step=step)

    def _ranks(self, score: float) -> bool:
        """Whether weights scoring ``score`` are among the ``keep`` best so far."""
        if self.keep == -1 or len(self.kept) < self.keep:
            return True
        return score > min(s for s, _ in self.kept)

    def _save_ranked(self, trainer: L.Trainer, step: int, score: float, best: bool) -> None:
        """Save these weights; drop the lowest-scoring kept file beyond ``keep``."""
        path = self.dirpath / best_checkpoint_name(step, score)
        trainer.save_checkpoint(str(path), weights_only=False)
        if best:
            self.best_path = path
        ranked = sorted([(s, p) for s, p in self.kept if p != path] + [(score, path)],
                        key=lambda kept: -kept[0])
        cut = len(ranked) if self.keep == -1 else self.keep
        self.kept, dropped = ranked[:cut], ranked[cut:]
        if trainer.is_global_zero:
            for _, old in dropped:
                old.unlink(missing_ok=True)

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"best_score": self.best_score,
                "best_path": None if self.best_path is None else str(self.best_path),
                "kept": [[s, str(p)] for s, p in self.kept],
                "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score = state_dict.get("best_score")
        best = state_dict.get("best_path")
        self.best_path = None if best is None else Path(best)
        kept = state_dict.get("kept")
        if kept is None and self.best_path is not None:  # a checkpoint from before `keep`
            kept = [[self.best_score, str(self.best_path)]]
        self.kept = [(float(s), Path(p)) for s, p in kept or []]
        self.history = list(state_dict.get("history") or [])
