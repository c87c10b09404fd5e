"""Checks of a composed training config that need no data, run before anything is built.

Every enumerated choice is compared with the values the code knows (the registries of
:mod:`fmc.models`, :mod:`fmc.data` and this stage), so that a typo is one line naming the key,
the valid values and the config file, and exit code 2 (:func:`fmc.core.cli.report_user_errors`),
instead of a traceback after the data were loaded.
"""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmc.core.config_values import flag, whole_number
from fmc.core.errors import FmcConfigError
from fmc.core.named_choices import choice_error

SELECTION_METRICS = ("val/volume_n_ssim", "val/n_ssim")
TEST_VOLUMES = ("auto", "true", "false")


def training_choices() -> dict[str, tuple[tuple[str, ...], str]]:
    """``{key: (valid values, config file or group)}`` for every enumerated key of fmc.train
    (networks and losses from their registries, other packages' entry points included)."""
    from fmc.models.fallback import FALLBACKS
    from fmc.models.losses import LOSSES
    from fmc.models.module import CONFIDENCES
    from fmc.models.networks import NETWORKS
    from fmc.models.optimizers import OPTIMIZERS, SCHEDULERS
    from fmc.models.unet3d import NORMS, OUT_ACTIVATIONS
    from fmc.models.weight_averaging import AVERAGINGS
    from fmc.training.loggers import LOGGERS

    model = "conf/model/unet3d.yaml"
    return {
        "model.network": (NETWORKS.names(), NETWORKS.where),
        "model.norm": (NORMS, model), "model.out_activation": (OUT_ACTIVATIONS, model),
        "model.optimizer": (OPTIMIZERS.names(), OPTIMIZERS.where),
        "model.scheduler": (SCHEDULERS.names(), SCHEDULERS.where),
        "model.confidence": (CONFIDENCES, model), "model.fallback": (FALLBACKS, model),
        "model.averaging": (AVERAGINGS.names(), AVERAGINGS.where),
        "loss.name": (LOSSES.names(), LOSSES.where),
        "logger.name": (LOGGERS.names(), LOGGERS.where),
        "callbacks.checkpoint.monitor": (SELECTION_METRICS, "conf/callbacks/default.yaml"),
        "test_volumes": (TEST_VOLUMES, "conf/train.yaml"),
    }


# Loss keyword arguments with enumerated values.
LOSS_KEY_CHOICES = {"window": "WINDOWS", "reduction": "REDUCTIONS"}


def check_choice(key: str, value: Any, choices: tuple[str, ...], where: str) -> None:
    """Raise :class:`FmcConfigError` when ``value`` is not one of ``choices``."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text not in choices:
        raise choice_error(key, value, choices, where)


def check_choices(cfg: DictConfig) -> None:
    """Every enumerated key of ``cfg``, the input channels and the loss's keyword arguments."""
    for key, (choices, where) in training_choices().items():
        value = OmegaConf.select(cfg, key)
        if value is not None or key != "callbacks.checkpoint.monitor":
            check_choice(key, value, choices, where)
    check_channels(cfg)
    check_loss_kwargs(cfg)


def check_channels(cfg: DictConfig) -> None:
    """``channels.list``: the view first, then registered channels, each once."""
    from fmc.preprocessing.channel_specs import CHANNELS, VIEW

    names = list(cfg.channels.list)
    unknown = [c for c in names if c not in CHANNELS]
    if unknown or not names or names[0] != VIEW or len(set(names)) != len(names):
        raise FmcConfigError(f"channels.list={names}: the first must be {VIEW}, the others "
                             f"from {', '.join(CHANNELS)}, each once (channels=...)")


def check_loss_kwargs(cfg: DictConfig) -> None:
    """``loss.kwargs``: only keys the loss takes, enumerated ones from their valid values."""
    from fmc.models import losses

    name = str(cfg.loss.name)
    kwargs = OmegaConf.to_container(cfg.loss.kwargs) or {}
    losses.LOSSES.check_arguments(name, kwargs)
    for key, registry in LOSS_KEY_CHOICES.items():
        if key in kwargs:
            check_choice(f"loss.kwargs.{key}", kwargs[key], getattr(losses, registry),
                         f"conf/loss/{name}.yaml")


def check_model_keys(cfg: DictConfig) -> None:
    """Every key of ``cfg.model`` is an argument of :class:`fmc.models.module.FusionModule`."""
    from fmc.models.module import FusionModule

    accepted = set(inspect.signature(FusionModule).parameters) - set(RUN_ARGUMENTS)
    unknown = sorted(set(cfg.model) - accepted)
    if unknown:
        raise FmcConfigError(f"model.{unknown[0]}: FusionModule takes no such argument; the "
                             f"model keys are {', '.join(sorted(accepted))} "
                             "(conf/model/unet3d.yaml)")


def check_model_numbers(cfg: DictConfig) -> None:
    """``model.lr`` a finite number > 0, ``model.weight_decay`` a finite number >= 0."""
    import math

    for key, lowest, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False)):
        if key not in cfg.model:
            continue
        value = cfg.model[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < lowest or (strict and number == lowest):
            bound = "> 0" if strict else ">= 0"
            raise FmcConfigError(f"model.{key}={value}: give a finite number {bound} "
                                 "(conf/model/unet3d.yaml)")


# FusionModule arguments that come from elsewhere than ``model:`` (the data, the run).
RUN_ARGUMENTS = ("channels", "loss", "loss_kwargs", "channel_scales_um", "patch_size",
                 "spacing_zyx", "study", "content", "change_limit")


def check_config(cfg: DictConfig) -> None:
    """Checks that need no data, each run once: enumerated keys, model keys, the network's
    arguments and rule (e.g. its depth), patch vs depth."""
    from fmc.models.networks import check_network

    check_choices(cfg)
    check_model_keys(cfg)
    check_model_numbers(cfg)
    whole_number(cfg.seed, "seed", 0, "conf/train.yaml")
    flag(cfg.test_baselines, "test_baselines", "conf/train.yaml")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    check_network(str(cfg.model.network), model, model.get("network_kwargs"))
    check_averaging(model)
    check_tta(model)
    depth = int(cfg.model.depth)
    divisor = 2 ** depth
    patch = list(cfg.data.patch_size)
    if len(patch) != 3 or any(int(p) <= 0 or int(p) % divisor for p in patch):
        raise FmcConfigError(
            f"data.patch_size={patch}: each side must be a positive multiple of 2**model.depth = "
            f"{divisor} (e.g. data.patch_size=[{divisor * 4},{divisor * 8},{divisor * 8}])")


def check_averaging(model: dict) -> None:
    """``model.averaging_kwargs``: only the averager's own arguments, values it accepts."""
    from fmc.models.weight_averaging import AVERAGINGS, build_averager

    name = str(model["averaging"])
    kwargs = model["averaging_kwargs"] or {}
    AVERAGINGS.check_arguments(name, kwargs)
    try:
        build_averager(name, kwargs)
    except (TypeError, ValueError) as error:
        raise FmcConfigError(f"{error} ({AVERAGINGS.where})") from None


def check_tta(model: dict) -> None:
    """``model.tta``: a list of the axes z, y and x (what fmc.predict's ``tta`` takes)."""
    from fmc.inference.tiling import flip_combinations

    axes = model.get("tta") or []
    if not isinstance(axes, list | tuple):
        raise FmcConfigError(f"model.tta={axes!r}: give a list of axes, e.g. model.tta=[y,x] "
                             "(conf/model/unet3d.yaml)")
    try:
        flip_combinations(axes)
    except ValueError as error:  # "tta axis 'w': use z, y or x"
        raise FmcConfigError(f"model.{error}, e.g. model.tta=[y,x] (conf/model/unet3d.yaml)"
                             ) from None


def study_number(value: Any) -> int | None:
    """``cfg.study`` as a study number, None for "all"; an unknown study lists the valid ones."""
    from fmc.core.naming import lists_prefix
    from fmc.core.studies import get_profile

    if lists_prefix(value) == "all":
        return None
    return get_profile(value).study


def check_holdout(cfg: DictConfig) -> int | None:
    """``cfg.holdout`` as a study number (None when not set); it needs ``study=all``."""
    from fmc.core.naming import lists_prefix
    from fmc.core.studies import get_profile

    value = cfg.holdout
    if value is None or str(value).strip().lower() in ("none", "null", ""):
        return None
    if lists_prefix(cfg.study) != "all":
        raise FmcConfigError(f"holdout={value} with study={cfg.study}: a held-out study is "
                             "left out of all the others; set study=all (the default)")
    return get_profile(value).study
