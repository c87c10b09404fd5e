"""What a finished training run leaves: the selected checkpoint, its calibrated fallback, the
whole-volume test scores and ``metrics.json`` (read by ``fmc.report`` and the benchmarks).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fmc.core.config_values import flag
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import TEST_TABLE
from fmc.training.run_folder import output_folder

log = logging.getLogger("fmc.train")


def run_metrics(cfg: DictConfig, trainer, selection: dict[str, Any]) -> dict[str, Any]:
    """What a finished run leaves on disk for reports (``metrics.json``), W&B or not.

    The run's identity (study, content, channels, loss, run name), the selection metric with
    its best value and checkpoint (``selection``: see :func:`best_selection`), its final logged
    metrics, the step/epoch reached and the checkpoints.
    """
    from fmc.training.clock import TrainClock

    final = {f"final/{key.replace('/', '_')}": float(value)
             for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    clock = next((c for c in trainer.callbacks if isinstance(c, TrainClock)), None)
    return {
        "run_name": str(cfg.run_name), "study": cfg.study, "content": str(cfg.content),
        "holdout": cfg.holdout,
        "channels": str(cfg.channels.name), "loss": str(cfg.loss.name),
        "selection": selection["metric"],
        "best/val_n_ssim": selection["score"],
        "best/checkpoint": selection["checkpoint"],
        **final,
        "global_step": int(trainer.global_step), "epochs": int(trainer.current_epoch),
        **(clock.summary() if clock is not None else {}),
        "last_checkpoint": str(output_folder() / "checkpoints" / "last.ckpt"),
    }


def best_selection(trainer) -> dict[str, Any]:
    """The selection metric of the run, its best value and the checkpoint holding it.

    Whole-volume validation (:class:`fmc.training.volume_validation.VolumeValidation` with ``select``)
    when it chose, else the patch proxy's ModelCheckpoint.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fmc.training.volume_validation import METRIC, VolumeValidation

    for callback in trainer.callbacks:
        if isinstance(callback, VolumeValidation) and callback.select:
            return {"metric": METRIC, "score": callback.best_score,
                    "checkpoint": None if callback.best_path is None else str(callback.best_path)}
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
            score = callback.best_model_score
            return {"metric": callback.monitor, "score": None if score is None else float(score),
                    "checkpoint": callback.best_model_path or None}
    return {"metric": None, "score": None, "checkpoint": None}


def selected_model(selection: dict[str, Any], module):
    """The selected checkpoint's model (on ``module``'s device), else ``module`` itself."""
    if not selection.get("checkpoint"):
        return module
    from fmc.models.checkpoint import load_fusion_module

    return load_fusion_module(selection["checkpoint"], str(next(module.parameters()).device))


def volume_settings(cfg: DictConfig):
    """How whole volumes are predicted for calibration and the test: ``fmc.predict``'s settings
    with the window and batch of ``callbacks.volume_validation`` (``conf/callbacks/default.yaml``
    holds their defaults); with that group switched off (``callbacks.volume_validation=null``),
    ``fmc.predict``'s own (``conf/inference/default.yaml``)."""
    from fmc.evaluation.volume_scoring import scoring_settings

    volume = cfg.callbacks.volume_validation
    if volume is None:  # no validation window, yet the test still predicts whole volumes
        from fmc.inference.predict_settings import default_settings

        return default_settings(progress=False)
    return scoring_settings(float(volume.overlap), int(volume.batch_size))


def calibrate_fallback(cfg: DictConfig, selection: dict[str, Any], module,
                       val_pairs: list | None) -> dict[str, Any]:
    """With ``model.fallback=calibrated``: measure the change limit on the validation volumes
    and store it in the selected checkpoint (and the last one), so that ``fmc.predict`` and
    ``fmc.challenge`` apply it by default. Returns ``{"fallback/change_limit": value}``."""
    if str(cfg.model.fallback) != "calibrated":
        return {}
    if not val_pairs:
        log.warning("model.fallback=calibrated without validation volumes: no change limit, "
                    "the checkpoint predicts without fallback")
        return {}
    from fmc.evaluation.volume_scoring import calibrate_change_limit_on
    from fmc.models.checkpoint import set_hyperparameter

    limit = calibrate_change_limit_on(selected_model(selection, module), val_pairs,
                                      volume_settings(cfg))
    for path in {selection.get("checkpoint"), str(output_folder() / "checkpoints" / "last.ckpt")}:
        if path and Path(path).is_file():
            set_hyperparameter(path, "change_limit", limit)
    module.hparams["change_limit"] = limit
    log.info("fallback=calibrated: change limit %.4f (99th percentile of the local change on "
             "%d validation volumes)", limit, len(val_pairs))
    return {"fallback/change_limit": limit}


def score_test_volumes(cfg: DictConfig, datamodule, selection: dict[str, Any],
                       module) -> tuple[dict[str, Any], list]:
    """Predict and score the test list's whole volumes with the selected weights.

    Returns ``{"test/n_ssim": mean, "test/n_ssim/worst": ..., "test/n_ssim/study<k>": ...,
    "test/gaussian_n_ssim": ..., "test/volumes": {name: score}}`` and the
    :class:`fmc.evaluation.volume_scoring.VolumeScore` list, or ``({}, [])`` when there is no
    test list (``test_volumes: auto``) or scoring is off. Writes the run's
    ``test_volumes.csv`` (with ``test_baselines: true``, the best Gaussian per volume too).
    """
    setting = str(cfg.test_volumes).lower()
    if setting in ("false", "off", "none"):
        return {}, []
    try:
        pairs = datamodule.pairs("test")
    except (FmcInputError, FmcConfigError) as error:
        if setting == "auto":
            log.info("no test volumes scored: %s", error)
            return {}, []
        raise
    from fmc.evaluation.volume_scoring import BASELINE_SIGMAS, score_h5_pairs, summarize_scores

    baselines = BASELINE_SIGMAS if flag(cfg.test_baselines, "test_baselines",
                                        "conf/train.yaml") else ()
    scores = score_h5_pairs(selected_model(selection, module), pairs, volume_settings(cfg),
                            label="test", baselines=baselines)
    result: dict[str, Any] = summarize_scores(scores, "test/n_ssim")
    result["test/volumes"] = {s.name: s.n_ssim for s in scores}
    if baselines:
        gaussian = [s.gaussian_n_ssim for s in scores if math.isfinite(s.gaussian_n_ssim)]
        if gaussian:
            result["test/gaussian_n_ssim"] = float(sum(gaussian) / len(gaussian))
    write_volume_table(output_folder() / TEST_TABLE, scores)
    log.info("test N_SSIM (challenge metric, %d whole volumes): %.4f; per volume: %s",
             len(scores), result.get("test/n_ssim", float("nan")), TEST_TABLE)
    return result, scores


def write_volume_table(path: Path, scores: Sequence) -> Path:
    """``test_volumes.csv``: one row per test volume (:data:`VOLUME_COLUMNS`), numbers with 6
    decimals, empty where not scored."""
    from fmc.core.files import write_text_atomic
    from fmc.evaluation.volume_scoring import VOLUME_COLUMNS

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for score in scores:
        writer.writerow({key: "" if value is None or (isinstance(value, float) and
                                                      math.isnan(value))
                         else f"{value:.6f}" if isinstance(value, float) else value
                         for key, value in score.row().items()})
    return write_text_atomic(path, buffer.getvalue())


# What a W&B runs table sorts by, besides best/*, final/* and test/*: (summary key, metrics key).
SUMMARY_EXTRAS = (("steps", "global_step"), ("epochs", "epochs"),
                  ("seconds", "train_seconds"), ("seconds_per_step", "seconds_per_step"))


def write_wandb_summary(summary, metrics: dict[str, Any]) -> None:
    """The run's figures into its W&B summary: best whole-volume validation N_SSIM
    (``best/val_n_ssim``), test N_SSIM mean, worst and per study (``test/*``), the final
    logged metrics (``final/*``), steps, epochs and training seconds."""
    for key, value in metrics.items():
        if key.startswith(("best/", "final/", "test/")) and value is not None:
            summary[key] = value
    for key, source in SUMMARY_EXTRAS:
        if metrics.get(source) is not None:
            summary[key] = metrics[source]


def log_test_table(logger, scores: Sequence) -> None:
    """The per-volume test scores as the W&B table ``test/volumes_table`` (file, study, content,
    N_SSIM, identity and best-Gaussian baselines)."""
    if not scores:
        return
    import wandb

    from fmc.evaluation.volume_scoring import VOLUME_COLUMNS

    rows = [[row[key] for key in VOLUME_COLUMNS] for row in (s.row() for s in scores)]
    logger.experiment.log({"test/volumes_table": wandb.Table(columns=list(VOLUME_COLUMNS),
                                                             data=rows)})


def log_model_artifact(logger, run_name: str, metrics: dict[str, Any]) -> None:
    """Upload the run's selected checkpoint (else ``last.ckpt``) to W&B as a ``model`` artifact
    named ``model-<run_name>``, aliased ``best`` and ``latest``, the run's scores as metadata.

    Lightning's own ``log_model`` follows ModelCheckpoint callbacks only; fmc selects by whole
    validation volumes (:mod:`fmc.training.volume_validation`), so it logs the choice itself.
    """
    import wandb

    path = metrics.get("best/checkpoint") or metrics.get("last_checkpoint")
    if not path or not Path(path).is_file():
        log.warning("logger.log_model: no checkpoint to log")
        return
    scores = {k: v for k, v in metrics.items()
              if k.startswith(("best/val", "test/n_ssim")) and isinstance(v, (int, float))}
    # Artifact names take letters, digits, '-', '_' and '.' only (a sweep's key=value parts).
    artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", f"model-{run_name}"), type="model",
                              metadata=scores)
    artifact.add_file(str(path), name=Path(path).name)
    logger.experiment.log_artifact(artifact, aliases=["best", "latest"])
