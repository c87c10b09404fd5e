"""Assemble and run a training job from a composed config (used by ``python -m fmc.train``).

Order: resolve the data (the embedded synthetic dataset when none is given), adapt the
configuration to the machine (CPU profile), check everything that can be checked before the first
step (lists, files, channels, patch divisibility), then build data module, model, callbacks,
logger and trainer, fit, and always close the W&B run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import write_text_atomic

log = logging.getLogger("fmc.train")


def _user_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def apply_cpu_profile(cfg: DictConfig, gpu_available: bool) -> None:
    """Without a GPU, shrink the GPU-sized defaults to what a CPU trains in minutes (logged)."""
    profile = cfg.cpu_profile
    accelerator = str(cfg.trainer.accelerator)
    if not profile.enabled or gpu_available or accelerator not in ("auto", "cpu"):
        return
    overrides = " ".join(_user_overrides())
    named_experiment = cfg.get("experiment_name") or "experiment=" in overrides
    with open_dict(cfg):
        if "data.patch_size" not in overrides:
            patch = [min(int(p), int(c)) for p, c in zip(cfg.data.patch_size, profile.patch_size,
                                                          strict=True)]
            if patch != list(cfg.data.patch_size):
                log.info("no GPU: training patch %s -> %s (cpu_profile; set data.patch_size to "
                         "choose)", list(cfg.data.patch_size), patch)
                cfg.data.patch_size = patch
        if named_experiment:
            return  # an experiment keeps its network; only its patch shrinks
        if "model.features" not in overrides and cfg.model.features != profile.features:
            log.info("no GPU: model.features %s -> %s (cpu_profile)", cfg.model.features,
                     profile.features)
            cfg.model.features = profile.features
        if "data.batch_size" not in overrides and cfg.data.batch_size != profile.batch_size:
            log.info("no GPU: data.batch_size %s -> %s (cpu_profile)", cfg.data.batch_size,
                     profile.batch_size)
            cfg.data.batch_size = profile.batch_size


def check_config(cfg: DictConfig) -> None:
    """Checks that need no data: patch vs depth, channel names, loss and model choices."""
    depth = int(cfg.model.depth)
    divisor = 2 ** depth
    patch = list(cfg.data.patch_size)
    if len(patch) != 3 or any(int(p) <= 0 or int(p) % divisor for p in patch):
        raise FmcConfigError(
            f"data.patch_size={patch}: each side must be a positive multiple of 2**model.depth = "
            f"{divisor} (e.g. data.patch_size=[{divisor * 4},{divisor * 8},{divisor * 8}])")
    from fmc.data.datamodule import CHANNELS

    unknown = [c for c in cfg.channels.list if c not in CHANNELS]
    if unknown or not cfg.channels.list or cfg.channels.list[0] != "raw_image":
        raise FmcConfigError(f"channels.list={list(cfg.channels.list)}: the first must be "
                             f"raw_image, the others from {', '.join(CHANNELS)}")


def build_logger(cfg: DictConfig, output_dir: Path) -> Any:
    """The configured Lightning logger (W&B offline by default), or False for none."""
    kind = str(cfg.logger.kind)
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="csv")
    if kind != "wandb":
        raise FmcConfigError(f"logger.kind={kind}: choose wandb, csv or none (logger=...)")
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE") or ("offline" if cfg.logger.offline else "online")
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=cfg.run_name,
                       group=cfg.logger.group, tags=list(cfg.logger.tags), save_dir=str(output_dir),
                       mode=mode, job_type="train")


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{'model.lr': 0.001, ...}`` (filterable columns in W&B)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


METRICS_FILE = "metrics.json"


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
        "holdout": cfg.get("holdout"),
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


def output_folder() -> Path:
    """This run's Hydra folder (the current folder outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path.cwd()


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


LOCK_FILE = ".fmc-train.lock"
# This process's lock on its run folder: (folder, open file), held until the process ends.
_run_lock: tuple[Path, Any] | None = None


def lock_run_folder(folder: Path) -> None:
    """Refuse a run folder that another live ``fmc.train`` is writing into.

    Two runs started in the same second share the default folder (its name has a one-second
    resolution), and a resume while the first run still trains would share it too: their
    checkpoints would overwrite each other. An advisory lock (``flock``) held for the life of
    the process says so instead; the system drops it when the process ends, even on SIGKILL,
    so a killed run never blocks its resume. DDP ranks other than 0 work in rank 0's folder and
    take no lock.

    Raises
    ------
    FmcInputError
        If another process holds the folder's lock.
    """
    global _run_lock
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: unchecked, as before
        return
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    folder = folder.resolve()
    if rank_zero_only.rank != 0 or (_run_lock is not None and _run_lock[0] == folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise FmcInputError(f"hydra.run.dir={folder}: another fmc.train (pid {owner}) is writing "
                            "into this run folder; give this run its own folder "
                            "(hydra.run.dir=...) or wait for that one to end") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    if _run_lock is not None:
        _run_lock[1].close()
    _run_lock = (folder, handle)


def study_number(value: Any) -> int | None:
    """``cfg.study`` as a study number, None for "all"; an unknown study lists the valid ones."""
    from fmc.core.cli import lists_prefix
    from fmc.core.studies import get_profile

    if lists_prefix(value) == "all":
        return None
    return get_profile(value).study


def check_holdout(cfg: DictConfig) -> int | None:
    """``cfg.holdout`` as a study number (None when not set); it needs ``study=all``."""
    from fmc.core.cli import lists_prefix
    from fmc.core.studies import get_profile

    value = cfg.get("holdout")
    if value is None or str(value).strip().lower() in ("none", "null", ""):
        return None
    if lists_prefix(cfg.study) != "all":
        raise FmcConfigError(f"holdout={value} with study={cfg.study}: a held-out study is "
                             "left out of all the others; set study=all (the default)")
    return get_profile(value).study


def degradation_axes(study: Any) -> list[str] | None:
    """The study's degradation axes ('Z', 'Y', 'X'); None for all studies (taken from the data)."""
    from fmc.core.studies import get_profile

    number = study_number(study)
    return None if number is None else list(get_profile(number).degradation_axes)


def build_datamodule(cfg: DictConfig, root: Path):
    """The data module of ``cfg`` over ``root`` (validated before training)."""
    from fmc.data.datamodule import FmcDataModule

    data = cfg.data
    return FmcDataModule(
        root=root, train_list=data.train_list, val_list=data.val_list, test_list=data.test_list,
        channels=list(cfg.channels.list), patch_size=list(data.patch_size),
        batch_size=int(data.batch_size), num_workers=int(data.num_workers),
        foreground_share=float(data.foreground_share),
        samples_per_volume=int(data.samples_per_volume),
        val_samples_per_volume=int(data.val_samples_per_volume),
        epoch_steps=None if data.get("epoch_steps") is None else int(data.epoch_steps),
        augment=bool(data.augment), degradation_axes=degradation_axes(cfg.study),
        seed=int(cfg.seed), distance_scale_um=float(data.distance_scale_um),
        light_scale_um=float(data.light_scale_um),
        robustness=OmegaConf.to_container(data.robustness) if data.get("robustness") else None)


def build_module(cfg: DictConfig, info: dict[str, Any]):
    """The LightningModule, carrying everything prediction needs in its hyperparameters."""
    from fmc.models.module import FusionModule

    model = cfg.model
    return FusionModule(
        channels=list(cfg.channels.list), features=int(model.features), depth=int(model.depth),
        norm=str(model.norm), out_activation=str(model.out_activation),
        residual=bool(model.residual), negative_slope=float(model.negative_slope),
        loss=str(cfg.loss.name), loss_kwargs=OmegaConf.to_container(cfg.loss.kwargs),
        optimizer=str(model.optimizer), lr=float(model.lr),
        weight_decay=float(model.weight_decay), scheduler=str(model.scheduler),
        channel_scales_um={"surface_distance": float(cfg.data.distance_scale_um),
                           "light_map": float(cfg.data.light_scale_um)},
        patch_size=[int(p) for p in cfg.data.patch_size],
        spacing_zyx=info.get("spacing_zyx"), study=info.get("study"),
        content=info.get("content") or str(cfg.content),
        image_panel=bool(model.image_panel),
        channels_last=bool(model.get("channels_last", False)),
        confidence=str(model.get("confidence", "none")),
        confidence_weight=float(model.get("confidence_weight", 0.1)),
        fallback=str(model.get("fallback", "none")))


SELECTION_METRICS = ("val/volume_n_ssim", "val/n_ssim")


def build_callbacks(cfg: DictConfig, output_dir: Path, val_pairs: list | None = None) -> list:
    """Checkpointing (best by the selection metric, and last), volume validation, early stopping.

    ``callbacks.checkpoint.monitor`` chooses the selection metric: ``val/volume_n_ssim`` (whole
    validation volumes, the challenge's N_SSIM, :mod:`fmc.training.volume_validation`) or ``val/n_ssim``
    (the patch proxy, every validation epoch).
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    checkpoint = cfg.callbacks.checkpoint
    monitor = str(checkpoint.monitor)
    if monitor not in SELECTION_METRICS:
        raise FmcConfigError(f"callbacks.checkpoint.monitor={monitor}: choose "
                             f"{' or '.join(SELECTION_METRICS)}")
    folder = output_dir / "checkpoints"
    volume = cfg.callbacks.get("volume_validation") or {}
    by_volume = monitor == "val/volume_n_ssim"
    callbacks: list = []
    if by_volume or volume.get("enabled"):
        if not val_pairs:
            raise FmcConfigError(f"callbacks.checkpoint.monitor={monitor} needs validation "
                                 "volumes: give data.val_list, or monitor val/n_ssim")
        from fmc.training.volume_validation import HISTORY_FILE, VolumeValidation

        callbacks.append(VolumeValidation(
            val_pairs, every_n_steps=volume.get("every_n_steps"),
            every_minutes=volume.get("every_minutes"), at_end=bool(volume.get("at_end", True)),
            select=by_volume, dirpath=folder, overlap=float(volume.get("overlap", 0.5)),
            batch_size=int(volume.get("batch_size", 4)), history_path=output_dir / HISTORY_FILE))
    if not by_volume:
        callbacks.append(ModelCheckpoint(
            dirpath=str(folder), monitor=monitor, mode=checkpoint.mode,
            save_top_k=int(checkpoint.save_top_k), every_n_epochs=int(checkpoint.every_n_epochs),
            auto_insert_metric_name=False,
            filename="epoch{epoch:04d}-step{step}-nssim{val/n_ssim:.4f}"))
    if checkpoint.save_last:
        # A callback of its own: ModelCheckpoint's save_last only refreshes last.ckpt when the
        # monitored metric improved, so a run stopped after a worse epoch resumed from the past.
        callbacks.append(ModelCheckpoint(dirpath=str(folder), filename="last", monitor=None,
                                         save_top_k=1, save_on_train_epoch_end=True,
                                         enable_version_counter=False))
    if cfg.callbacks.get("early_stopping"):
        if by_volume:
            raise FmcConfigError("callbacks.early_stopping works with the patch proxy only: set "
                                 "callbacks.checkpoint.monitor=val/n_ssim")
        callbacks.append(EarlyStopping(monitor=monitor, mode=checkpoint.mode,
                                       **OmegaConf.to_container(cfg.callbacks.early_stopping)))
    from fmc.core.random_state import RandomState
    from fmc.training.clock import TrainClock

    # The generators' states in every checkpoint: a resumed run draws the patches an
    # uninterrupted one would have (fmc.core.random_state).
    callbacks += [RandomState(), TrainClock()]
    return callbacks


def selected_model(selection: dict[str, Any], module):
    """The selected checkpoint's model (on ``module``'s device), else ``module`` itself."""
    if not selection.get("checkpoint"):
        return module
    from fmc.inference.prediction import load_model

    return load_model(selection["checkpoint"], str(next(module.parameters()).device))


def window_settings(cfg: DictConfig) -> dict[str, Any]:
    """Sliding-window overlap and batch of whole-volume scoring (``callbacks.volume_validation``)."""
    volume = cfg.callbacks.get("volume_validation") or {}
    return {"overlap": float(volume.get("overlap", 0.5)),
            "batch_size": int(volume.get("batch_size", 4))}


def calibrate_fallback(cfg: DictConfig, selection: dict[str, Any], module,
                       val_pairs: list | None) -> dict[str, Any]:
    """With ``model.fallback=calibrated``: measure the change limit on the validation volumes
    and store it in the selected checkpoint (and the last one), so that ``fmc.predict`` and
    ``fmc.challenge`` apply it by default. Returns ``{"fallback/change_limit": value}``."""
    if str(cfg.model.get("fallback", "none")) != "calibrated":
        return {}
    if not val_pairs:
        log.warning("model.fallback=calibrated without validation volumes: no change limit, "
                    "the checkpoint predicts without fallback")
        return {}
    from fmc.evaluation.volume_scoring import calibrate_change_limit_on
    from fmc.models.checkpoint import set_hyperparameter

    limit = calibrate_change_limit_on(selected_model(selection, module), val_pairs,
                                      **window_settings(cfg))
    for path in {selection.get("checkpoint"), str(output_folder() / "checkpoints" / "last.ckpt")}:
        if path and Path(path).is_file():
            set_hyperparameter(path, "change_limit", limit)
    module.hparams["change_limit"] = limit
    log.info("fallback=calibrated: change limit %.4f (99th percentile of the local change on "
             "%d validation volumes)", limit, len(val_pairs))
    return {"fallback/change_limit": limit}


def score_test_volumes(cfg: DictConfig, datamodule, selection: dict[str, Any],
                       module) -> dict[str, Any]:
    """Predict and score the test list's whole volumes with the selected weights.

    Returns ``{"test/n_ssim": mean, "test/n_ssim/worst": ..., "test/n_ssim/study<k>": ...,
    "test/volumes": {name: score}}``, or ``{}`` when there is no test list (``test_volumes:
    auto``) or scoring is off.
    """
    setting = str(cfg.get("test_volumes", "auto")).lower()
    if setting in ("false", "off", "none"):
        return {}
    try:
        pairs = datamodule.pairs("test")
    except (FmcInputError, FmcConfigError) as error:
        if setting == "auto":
            log.info("no test volumes scored: %s", error)
            return {}
        raise
    from fmc.evaluation.volume_scoring import score_h5_pairs, summarize_scores

    scores = score_h5_pairs(selected_model(selection, module), pairs, **window_settings(cfg))
    result: dict[str, Any] = summarize_scores(scores, "test/n_ssim")
    result["test/volumes"] = {s.name: s.n_ssim for s in scores}
    log.info("test N_SSIM (challenge metric, %d whole volumes): %.4f", len(scores),
             result.get("test/n_ssim", float("nan")))
    return result


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    if cfg.ckpt_path is None:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" \
        else Path(cfg.ckpt_path)
    if not path.is_file():
        raise FmcInputError(f"ckpt_path={cfg.ckpt_path}: {path} does not exist")
    return str(path)


def train(cfg: DictConfig) -> float | None:
    """Run one training job; returns the best validation N_SSIM (None when skipped)."""
    import lightning as L
    import torch

    if cfg.data.root is not None:
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise FmcInputError(f"data.root={root}: no such folder (give the output folder of "
                                "fmc.prepare)")
    else:
        from fmc.preprocessing.conversion import prepare_default_dataset

        root = prepare_default_dataset()
    apply_cpu_profile(cfg, torch.cuda.is_available())
    check_config(cfg)
    study_number(cfg.study)
    held_out = check_holdout(cfg)
    from fmc.core.studies import check_content

    check_content(str(cfg.content))
    output_dir = output_folder()
    lock_run_folder(output_dir)
    datamodule = build_datamodule(cfg, root)
    try:
        datamodule.validate()
    except FmcInputError as error:
        if held_out is not None and "not found" in str(error):
            error = FmcInputError(f"{error}; leave-one-study-out lists (holdout={held_out}) are "
                                  f"written by fmc.prepare for contents with two or more "
                                  f"studies: prepare {root} again")
        if _is_multirun():
            log.warning("skipping %s: %s", cfg.run_name, error)
            return None
        raise error from None
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    L.seed_everything(int(cfg.seed), workers=True)
    module = build_module(cfg, datamodule.dataset_info())
    if ckpt_path is not None:
        from fmc.models.checkpoint import check_resumable, read_checkpoint

        # Checked here, as data, so that a foreign or hostile file is a one-line refusal
        # rather than a failure deep inside Lightning's restore.
        check_resumable(ckpt_path, read_checkpoint(ckpt_path), module)
    logger = build_logger(cfg, output_dir)
    trainer_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                      if v is not None}
    try:
        if logger and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            logger.experiment.config.update(flat_config(cfg), allow_val_change=True)
        val_pairs = datamodule.pairs("val") if datamodule.lists["val"] is not None else None
        trainer = L.Trainer(logger=logger, callbacks=build_callbacks(cfg, output_dir, val_pairs),
                            default_root_dir=str(output_dir), **trainer_kwargs)
        # weights_only given explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override it.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        selection = best_selection(trainer)
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=selection["checkpoint"],
                         weights_only=True)
        metrics = run_metrics(cfg, trainer, selection)
        if trainer.is_global_zero:
            metrics.update(calibrate_fallback(cfg, selection, module, val_pairs))
            metrics.update(score_test_volumes(cfg, datamodule, selection, module))
        write_text_atomic(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        if logger and type(logger).__name__ == "WandbLogger":
            summary = logger.experiment.summary
            for key, value in metrics.items():
                if key.startswith(("best/", "final/", "test/")) and value is not None:
                    summary[key] = value
        best = selection["score"]
        log.info("best %s %s, checkpoint %s", selection["metric"],
                 None if best is None else f"{float(best):.4f}", selection["checkpoint"])
        return None if best is None else float(best)
    finally:
        if logger and type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
