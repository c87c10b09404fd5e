"""Assemble and run a training job from a composed config (used by ``python -m fmc.train``).

Order: resolve the data (the embedded synthetic dataset when none is given), check everything
that can be checked before the first step (:mod:`fmc.training.config_checks`: enumerated keys,
lists, files, channels, patch divisibility), then build data module, model, callbacks, logger
and trainer (:mod:`fmc.training.builders`), fit, select, calibrate and score
(:mod:`fmc.training.results`), and always close the W&B run. The machine profile (CPU- or
GPU-sized network and patch) is configuration: ``profile=`` (:mod:`fmc.training.profile`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fmc.core.config_values import flag
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import write_text_atomic
from fmc.core.logs import verbose
from fmc.core.naming import METRICS_FILE, SKIPPED_FILE
from fmc.training.builders import build_callbacks, build_datamodule, build_module, flat_config
from fmc.training.config_checks import check_config, check_holdout, study_number
from fmc.training.loggers import build_logger
from fmc.training.profile import profile_choice
from fmc.training.results import (
    best_selection,
    calibrate_fallback,
    log_model_artifact,
    log_test_table,
    run_metrics,
    score_test_volumes,
    write_wandb_summary,
)
from fmc.training.run_folder import is_multirun, lock_run_folder, output_folder

log = logging.getLogger("fmc.train")


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt`` (a path, or ``last`` which must exist), or
    with ``resume=true`` this run's ``last.ckpt`` when there is one."""
    if cfg.ckpt is None:
        last = output_dir / "checkpoints" / "last.ckpt"
        if flag(cfg.resume, "resume", "conf/train.yaml") and last.is_file():
            log.info("resume=true: continuing from %s", last)
            return str(last)
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if cfg.ckpt == "last" else Path(cfg.ckpt)
    if not path.is_file():
        raise FmcInputError(f"ckpt={cfg.ckpt}: {path} does not exist")
    return str(path)


def check_no_earlier_checkpoints(output_dir: Path, ckpt_path: str | None) -> None:
    """A run folder that holds another run's checkpoints is resumed, never overwritten."""
    from fmc.core.protected import is_within

    folder = output_dir / "checkpoints"
    earlier = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if earlier and (ckpt_path is None or not is_within(ckpt_path, folder)):
        raise FmcInputError(f"hydra.run.dir={output_dir}: holds the checkpoints of an earlier run "
                            f"({earlier[0].name}, ...); resume it with ckpt=last, or give "
                            "this run its own folder")


def read_finished_metrics(path: Path) -> dict:
    """A finished run's ``metrics.json``; one line when it is not a JSON mapping."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FmcInputError(f"{path}: not readable as JSON ({error}); with resume=true a run "
                            "that has it counts as finished: remove it to train this run again"
                            ) from None
    if not isinstance(metrics, dict):
        raise FmcInputError(f"{path}: not an fmc metrics file (a JSON mapping); remove it to "
                            "train this run again")
    return metrics


def train(cfg: DictConfig) -> float | None:
    """Run one training job; returns the best validation N_SSIM (None when skipped)."""
    root, held_out = _checked_inputs(cfg)
    from fmc.training.run_identity import current_identity

    identity = current_identity(cfg)
    cfg.run_name = identity.name  # one name: W&B, metrics.json, the model artifact, fmc.report
    log.info("profile=%s: model.features=%s, data.patch_size=%s, data.batch_size=%s",
             profile_choice(), cfg.model.features, list(cfg.data.patch_size), cfg.data.batch_size)
    output_dir = output_folder()
    finished = output_dir / METRICS_FILE
    if flag(cfg.resume, "resume", "conf/train.yaml") and finished.is_file():
        # A resumed sweep trains only what did not finish: this run already wrote its results.
        best = read_finished_metrics(finished).get("best/val_n_ssim")
        log.info("resume=true: %s already finished (%s); skipped", output_dir, METRICS_FILE)
        return None if best is None else float(best)
    lock_run_folder(output_dir)
    datamodule = _validated_data(cfg, root, held_out, output_dir)
    if datamodule is None:
        return None
    module, ckpt_path = _module_to_train(cfg, datamodule, output_dir)
    logger = build_logger(cfg, output_dir, identity)
    trainer_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                      if v is not None}
    # Lightning's parameter table takes 15 lines; the network line says what a person needs
    # (verbose, or trainer.enable_model_summary=true: the table).
    trainer_kwargs.setdefault("enable_model_summary", verbose())
    wandb_logger = logger if logger and type(logger).__name__ == "WandbLogger" else None
    try:
        if wandb_logger is not None:
            quiet_wandb()  # before the W&B run starts: logger.experiment starts it
            wandb_logger.experiment.config.update(flat_config(cfg), allow_val_change=True)
        val_pairs = datamodule.pairs("val") if datamodule.lists["val"] is not None else None
        trainer = build_trainer(logger, build_callbacks(cfg, output_dir, val_pairs),
                                output_dir, trainer_kwargs)
        # weights_only given explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override it.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        selection = best_selection(trainer)
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=selection["checkpoint"],
                         weights_only=True)
        _record_results(cfg, trainer, selection, module, datamodule, val_pairs, wandb_logger,
                        output_dir)
        best = selection["score"]
        log.info("best %s %s, checkpoint %s", selection["metric"],
                 None if best is None else f"{float(best):.4f}", selection["checkpoint"])
        return None if best is None else float(best)
    finally:
        if wandb_logger is not None:
            import wandb

            run = wandb.run
            wandb.finish()
            if run is not None:
                log_wandb_run(run)


def _checked_inputs(cfg: DictConfig) -> tuple[Path, int | None]:
    """The prepared data's folder and the held-out study, after every config check."""
    from fmc.core.studies import check_content
    from fmc.preprocessing.embedded import h5_root_or_embedded

    check_config(cfg)
    study_number(cfg.study)
    held_out = check_holdout(cfg)
    check_content(str(cfg.content))
    return h5_root_or_embedded(cfg.data.root), held_out


def _validated_data(cfg: DictConfig, root: Path, held_out: int | None, output_dir: Path):
    """The data module, its lists checked; None when a sweep's combination has nothing to train
    (``skipped.txt`` says why)."""
    datamodule = build_datamodule(cfg, root)
    try:
        datamodule.validate()
    except FmcInputError as error:
        if held_out is not None and "not found" in str(error):
            error = FmcInputError(f"{error}; leave-one-study-out lists (holdout={held_out}) are "
                                  f"written by fmc.prepare for contents with two or more "
                                  f"studies: prepare {root} again")
        if is_multirun():
            log.warning("skipping %s: %s", cfg.run_name, error)
            (output_dir / SKIPPED_FILE).write_text(f"{cfg.run_name}: {error}\n")
            return None
        raise error from None
    return datamodule


def _module_to_train(cfg: DictConfig, datamodule, output_dir: Path):
    """The seeded LightningModule and the checkpoint to resume from (checked as data), if any."""
    import lightning as L

    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    check_no_earlier_checkpoints(output_dir, ckpt_path)
    L.seed_everything(int(cfg.seed), workers=True)
    module = build_module(cfg, datamodule.dataset_info())
    log.info("network: %s, %s parameters", cfg.model.network,
             f"{sum(p.numel() for p in module.parameters()):,}")
    if ckpt_path is not None:
        from fmc.models.checkpoint import check_resumable, read_checkpoint

        # Checked here, as data, so that a foreign or hostile file is a one-line refusal
        # rather than a failure deep inside Lightning's restore.
        saved = read_checkpoint(ckpt_path)
        check_resumable(ckpt_path, saved, module)
        log.info("resuming from %s (step %s)", ckpt_path, saved.get("global_step", "?"))
    return module, ckpt_path


def _record_results(cfg: DictConfig, trainer, selection: dict, module, datamodule, val_pairs,
                    wandb_logger, output_dir: Path) -> None:
    """Calibrate, score the test volumes, write ``metrics.json`` and tell W&B."""
    metrics, test_scores = run_metrics(cfg, trainer, selection), []
    if trainer.is_global_zero:
        metrics.update(calibrate_fallback(cfg, selection, module, val_pairs))
        test_metrics, test_scores = score_test_volumes(cfg, datamodule, selection, module)
        metrics.update(test_metrics)
    write_text_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    if wandb_logger is not None:
        write_wandb_summary(wandb_logger.experiment.summary, metrics)
        log_test_table(wandb_logger, test_scores)
        if cfg.logger.log_model:
            log_model_artifact(wandb_logger, str(cfg.run_name), metrics)


def build_trainer(logger, callbacks: list, output_dir: Path, trainer_kwargs: dict):
    """Lightning's Trainer; a ``trainer.*`` value it refuses is one line naming it."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(logger=logger, callbacks=callbacks, default_root_dir=str(output_dir),
                         **trainer_kwargs)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as error:
        # ImportError: trainer.accelerator=tpu without torch_xla, and the like
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FmcConfigError(f"trainer: {first} (the trainer.* keys: conf/trainer/default.yaml)"
                             ) from None


def quiet_wandb() -> None:
    """W&B's own terminal output off unless verbose: its header, a notice about an argument
    Lightning passes, the run's history and summary at the end. Set before the run starts (the
    notice comes while it starts); :func:`log_wandb_run` says where the run went instead."""
    import wandb

    wandb.setup(wandb.Settings(silent=not verbose()))


def log_wandb_run(run) -> None:
    """One line: an offline run's folder and the command that uploads it, or an online run's page."""
    if run.settings.mode == "disabled":
        return
    if run.offline:
        log.info("W&B offline run: wandb sync %s uploads it", run.sync_dir)
    else:
        log.info("W&B run: %s", run.url)
