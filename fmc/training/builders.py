"""Build the parts of a training run from its composed config: data module, model, callbacks
(each from its config group; :mod:`fmc.training.config_checks` has checked the keys; the logger:
:mod:`fmc.training.loggers`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmc.core.config_values import flag, whole_number
from fmc.core.errors import FmcConfigError
from fmc.core.naming import VALIDATION_IMAGES
from fmc.training.config_checks import RUN_ARGUMENTS, SELECTION_METRICS, study_number

CALLBACKS_YAML = "conf/callbacks/default.yaml"


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


def degradation_axes(study: Any) -> list[str] | None:
    """The study's degradation axes ('Z', 'Y', 'X'); None for all studies (taken from the data)."""
    from fmc.core.studies import get_profile

    number = study_number(study)
    return None if number is None else list(get_profile(number).degradation_axes)


def _axes_setting(value: Any, planes: bool = False) -> Any:
    """``data.flip_axes`` / ``data.rot90_planes`` as the data module takes them: "auto" or a list
    (a single plane may be written as one string, ``rot90_planes: YX``)."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return "auto"
    if isinstance(value, str):
        return [value] if planes else value
    return OmegaConf.to_container(value)


def build_datamodule(cfg: DictConfig, root: Path):
    """The data module of ``cfg`` over ``root`` (validated before training)."""
    from fmc.data.datamodule import FmcDataModule
    from fmc.preprocessing.channel_specs import channel_scales

    data = cfg.data
    return FmcDataModule(
        root=root, train_list=data.train_list, val_list=data.val_list, test_list=data.test_list,
        channels=list(cfg.channels.list), patch_size=list(data.patch_size),
        batch_size=int(data.batch_size), num_workers=int(data.num_workers),
        foreground_share=float(data.foreground_share),
        samples_per_volume=int(data.samples_per_volume),
        val_samples_per_volume=int(data.val_samples_per_volume),
        epoch_steps=None if data.epoch_steps is None else int(data.epoch_steps),
        augment=bool(data.augment), degradation_axes=degradation_axes(cfg.study),
        flip_axes=_axes_setting(data.flip_axes),
        rot90_planes=_axes_setting(data.rot90_planes, planes=True),
        seed=int(cfg.seed), channel_scales_um=channel_scales(data),
        robustness=OmegaConf.to_container(data.robustness) if data.robustness else None)


def build_module(cfg: DictConfig, info: dict[str, Any]):
    """The LightningModule: every ``model.*`` key is a :class:`~fmc.models.module.FusionModule`
    argument of the same name (no hand-copied list), plus what the data and the run give; it
    carries everything prediction needs in its hyperparameters."""

    model = OmegaConf.to_container(cfg.model, resolve=True)
    clash = sorted(set(model) & set(RUN_ARGUMENTS))
    if clash:
        raise FmcConfigError(f"model.{clash[0]}: set by fmc.train from the data and the run, "
                             "not a model key (conf/model/unet3d.yaml)")
    try:
        return _fusion_module(cfg, model, info)
    except ValueError as error:  # e.g. "features=0 is not valid; it must be an integer >= 2"
        text = str(error)
        key = "model." if re.match(r"\w+=", text) else "model: "
        raise FmcConfigError(f"{key}{text} (conf/model/unet3d.yaml)") from None


def _fusion_module(cfg: DictConfig, model: dict, info: dict[str, Any]):
    from fmc.models.module import FusionModule
    from fmc.preprocessing.channel_specs import channel_scales

    return FusionModule(
        **model, channels=list(cfg.channels.list),
        loss=str(cfg.loss.name), loss_kwargs=OmegaConf.to_container(cfg.loss.kwargs),
        channel_scales_um=channel_scales(cfg.data),
        patch_size=[int(p) for p in cfg.data.patch_size],
        spacing_zyx=info.get("spacing_zyx"), study=info.get("study"),
        content=info.get("content") or str(cfg.content))


def _volume_validation(volume: DictConfig, val_pairs: list, select: bool, folder: Path,
                       output_dir: Path, keep: int = 1):
    """The whole-volume validation callback from ``callbacks.volume_validation`` (its keys and
    their defaults: ``conf/callbacks/default.yaml``)."""
    from fmc.training.volume_validation import HISTORY_FILE, VolumeValidation

    images = flag(volume.images, "callbacks.volume_validation.images", CALLBACKS_YAML)
    return VolumeValidation(
        val_pairs, every_n_steps=volume.every_n_steps, every_minutes=volume.every_minutes,
        at_end=flag(volume.at_end, "callbacks.volume_validation.at_end", CALLBACKS_YAML),
        select=select, dirpath=folder, overlap=float(volume.overlap),
        batch_size=int(volume.batch_size), history_path=output_dir / HISTORY_FILE,
        images_dir=output_dir / VALIDATION_IMAGES if images else None,
        image_panel_px=whole_number(volume.image_panel_px,
                                    "callbacks.volume_validation.image_panel_px", 16,
                                    CALLBACKS_YAML), keep=keep)


def build_callbacks(cfg: DictConfig, output_dir: Path, val_pairs: list | None = None) -> list:
    """Checkpointing (best by the selection metric, and last), volume validation, early stopping.

    ``callbacks.checkpoint.monitor`` chooses the selection metric: ``val/volume_n_ssim`` (whole
    validation volumes, the challenge's N_SSIM, :mod:`fmc.training.volume_validation`) or ``val/n_ssim``
    (the patch proxy, every validation epoch).
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    checkpoint = cfg.callbacks.checkpoint
    monitor = str(checkpoint.monitor)
    assert monitor in SELECTION_METRICS, monitor  # checked by check_choices
    folder = output_dir / "checkpoints"
    # callbacks.volume_validation=null switches the group off (as its enabled: false does),
    # which selecting by whole validation volumes cannot do without.
    volume = cfg.callbacks.volume_validation
    by_volume = monitor == "val/volume_n_ssim"
    if by_volume and volume is None:
        raise FmcConfigError(f"callbacks.checkpoint.monitor={monitor} needs "
                             "callbacks.volume_validation (null here): keep its settings, or "
                             f"monitor val/n_ssim ({CALLBACKS_YAML})")
    enabled = volume is not None and flag(volume.enabled, "callbacks.volume_validation.enabled",
                                          CALLBACKS_YAML)
    keep = whole_number(checkpoint.save_top_k, "callbacks.checkpoint.save_top_k", -1,
                        CALLBACKS_YAML)
    if keep == 0:
        raise FmcConfigError("callbacks.checkpoint.save_top_k=0 keeps no weights to predict "
                             f"with: give 1 (the best), k (the k best) or -1 (all) ({CALLBACKS_YAML})")
    callbacks: list = []
    if by_volume or enabled:
        if not val_pairs:
            raise FmcConfigError(f"callbacks.checkpoint.monitor={monitor} needs validation "
                                 "volumes: give data.val_list, or monitor val/n_ssim")
        callbacks.append(_volume_validation(volume, val_pairs, by_volume, folder, output_dir,
                                            keep))
    if not by_volume:
        callbacks.append(ModelCheckpoint(
            dirpath=str(folder), monitor=monitor, mode=checkpoint.mode,
            save_top_k=keep, every_n_epochs=int(checkpoint.every_n_epochs),
            auto_insert_metric_name=False,
            filename="epoch{epoch:04d}-step{step}-nssim{val/n_ssim:.4f}"))
    if cfg.trainer.enable_progress_bar is not False:  # null: Lightning's default, a bar
        from fmc.training.progress import RunProgressBar

        callbacks.append(RunProgressBar())  # the whole run's steps and max_time's time left
    if checkpoint.save_last:
        # A callback of its own: ModelCheckpoint's save_last only refreshes last.ckpt when the
        # monitored metric improved, so a run stopped after a worse epoch resumed from the past.
        callbacks.append(ModelCheckpoint(dirpath=str(folder), filename="last", monitor=None,
                                         save_top_k=1, save_on_train_epoch_end=True,
                                         enable_version_counter=False))
    if cfg.callbacks.early_stopping:
        if by_volume:
            raise FmcConfigError("callbacks.early_stopping works with the patch proxy only: set "
                                 "callbacks.checkpoint.monitor=val/n_ssim")
        callbacks.append(EarlyStopping(monitor=monitor, mode=checkpoint.mode,
                                       **OmegaConf.to_container(cfg.callbacks.early_stopping)))
    from fmc.core.random_state import RandomState
    from fmc.training.clock import TrainClock
    from fmc.training.divergence import StopOnNonFinite

    # The generators' states in every checkpoint: a resumed run draws the patches an
    # uninterrupted one would have (fmc.core.random_state).
    callbacks += [RandomState(), TrainClock(), StopOnNonFinite(folder)]
    return callbacks
