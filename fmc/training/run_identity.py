"""What tells one training run from another: its name, its group, its job type and its tags.

They go to Weights & Biases (run name, group, ``job_type``, tags), to ``metrics.json``
(``run_name``) and so to ``fmc.report`` and the model packages. The rules (README, "Compare
runs"):

* **name** ``[<experiment>-]<scope>-<content>-<channels>-<loss>-<network>-seed<seed>``, e.g.
  ``study3-nucleus-raw_distance-ssim_l1-basicunet-seed1337`` or
  ``rwth_ge-holdout4-membrane-raw_distance-ssim_l1-unet3d-seed0``; scope is ``study<K>``,
  ``all`` or ``holdout<K>``. In a sweep, every other key the sweep varies is appended as
  ``key=value`` (``...-seed1337-model.lr=0.001``), so the runs of one sweep never share a name;
  a hyperparameter search adds its trial number (``-trial3``). ``run_name=...`` on the command
  line names the run yourself.
* **group** the sweep folder's name (its time stamp, or the last part of ``hydra.sweep.dir``):
  every run of one ``--multirun`` together. A single run has no group. ``logger.group=...``
  names it yourself.
* **job type** ``search`` (``hparams_search=...``), ``holdout`` (``holdout=K``) or ``train``.
* **tags** ``study:<K>``, ``content:<c>``, ``network:<n>``, ``experiment:<e>`` (``none``),
  ``profile:<p>``, ``holdout:<K>`` when one is held out, and ``logger.tags``.

Everything here but :func:`current_identity` works without Hydra (on a composed config).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmc.core.naming import lists_prefix

log = logging.getLogger(__name__)

AUTO = "auto"
# Override keys that the name already shows (a sweep over them needs no key=value suffix).
NAMED_KEYS = frozenset({"study", "content", "holdout", "channels", "loss", "model",
                        "model.network", "seed", "experiment", "profile", "run_name"})
# W&B refuses tags longer than this.
TAG_LIMIT = 64


@dataclass(frozen=True)
class RunIdentity:
    """A run's name, group (None: not in a sweep), W&B job type and tags."""

    name: str
    group: str | None
    job_type: str
    tags: tuple[str, ...]


def network_label(network: Any) -> str:
    """``basicunet`` for ``monai_basicunet``: the network's name without its library prefix."""
    return str(network or "unknown").removeprefix("monai_")


def base_name(study: Any, holdout: Any, content: Any, channels: Any, loss: Any, network: Any,
              seed: Any, experiment: str | None = None) -> str:
    """The name's fixed part: ``[<experiment>-]<scope>-<content>-<channels>-<loss>-<network>-seed<seed>``."""
    parts = [experiment] if experiment else []
    parts += [lists_prefix(study, holdout), str(content), str(channels), str(loss),
              network_label(network), f"seed{seed}"]
    return "-".join(parts)


def swept_keys(overrides: Sequence[str], search_params: Sequence[str] = ()) -> list[str]:
    """The keys a sweep varies: overrides with sweep syntax (``a=1,2``, ``range(...)``,
    ``choice(...)``) and a search's parameters, in order, without duplicates."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: list[str] = []
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - Hydra parsed them before; a surprise names nothing
        parsed = []
    for override in parsed:
        if override.is_sweep_override():
            keys.append(override.get_key_element().lstrip("+~"))
    keys += [str(key) for key in search_params]
    return list(dict.fromkeys(keys))


def sweep_suffix(job_overrides: Sequence[str], varied: Sequence[str]) -> list[str]:
    """``key=value`` of this job's overrides for each varied key the name does not show."""
    values = {}
    for override in job_overrides:
        key, sep, value = str(override).partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    return [f"{key}={values[key]}" for key in varied
            if key not in NAMED_KEYS and key in values]


def job_type_of(hparams_search: str | None, holdout: Any) -> str:
    """``search``, ``holdout`` or ``train``."""
    if hparams_search:
        return "search"
    if holdout is not None and str(holdout).strip().lower() not in ("", "none", "null"):
        return "holdout"
    return "train"


def tags_of(study: Any, content: Any, network: Any, experiment: str | None, profile: str | None,
            holdout: Any, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The run's tags (see the module text), each at most :data:`TAG_LIMIT` characters."""
    scope = lists_prefix(study, None)
    tags = [f"study:{scope.removeprefix('study')}", f"content:{content}",
            f"network:{network_label(network)}", f"experiment:{experiment or 'none'}",
            f"profile:{profile or 'none'}"]
    if job_type_of(None, holdout) == "holdout":
        tags.append(f"holdout:{holdout}")
    tags += [str(tag) for tag in extra]
    return tuple(dict.fromkeys(tag[:TAG_LIMIT] for tag in tags))


def run_identity(cfg: DictConfig, choices: Mapping[str, Any], sweep_dir: Path | None = None,
                 sweep_overrides: Sequence[str] = (), search_params: Sequence[str] = (),
                 job_overrides: Sequence[str] = (), job_number: int | None = None) -> RunIdentity:
    """The identity of the run whose composed config is ``cfg``.

    Parameters
    ----------
    cfg : DictConfig
        The composed training config (``study``, ``content``, ``holdout``, ``seed``,
        ``channels.name``, ``loss.name``, ``model.network``, ``run_name``, and ``logger.group``
        and ``logger.tags`` where the logger has them: ``conf/logger/wandb.yaml`` does, ``csv``
        and ``none`` do not).
    choices : mapping
        The config groups chosen (Hydra's ``runtime.choices``: ``experiment``, ``profile``,
        ``hparams_search``; a group nothing chose is absent).
    sweep_dir : Path, optional
        The sweep folder when the run is one job of a ``--multirun``.
    sweep_overrides, search_params : sequence of str
        The sweep's command-line overrides (with their sweep syntax) and a search's parameter
        keys: what varies between its runs.
    job_overrides : sequence of str
        This job's overrides (``key=value``).
    job_number : int, optional
        This job's number in the sweep.
    """
    experiment = choices.get("experiment") or None
    search = choices.get("hparams_search") or None
    name = AUTO if cfg.run_name is None else str(cfg.run_name)  # run_name=null: auto as well
    if name == AUTO:
        name = base_name(cfg.study, cfg.holdout, cfg.content, cfg.channels.name, cfg.loss.name,
                         cfg.model.network, cfg.seed, experiment)
        if sweep_dir is not None:
            name = "-".join([name, *sweep_suffix(job_overrides,
                                                 swept_keys(sweep_overrides, search_params))])
            if search and job_number is not None:
                name += f"-trial{job_number}"
    # Only the W&B logger has a group and tags (logger=csv and logger=none have neither key):
    # an absent key is None here, as auto (group) and no tags of one's own.
    group = OmegaConf.select(cfg, "logger.group")
    if group is None or str(group) == AUTO:
        group = None if sweep_dir is None else Path(sweep_dir).name
    tags = tags_of(cfg.study, cfg.content, cfg.model.network, experiment,
                   choices.get("profile"), cfg.holdout,
                   [str(tag) for tag in OmegaConf.select(cfg, "logger.tags") or ()])
    return RunIdentity(name=name, group=None if group is None else str(group),
                       job_type=job_type_of(search, cfg.holdout), tags=tags)


def current_identity(cfg: Any) -> RunIdentity:
    """:func:`run_identity` of the running Hydra job (its choices, its sweep's ``multirun.yaml``).

    Outside Hydra (a library call) the run has no sweep and no group choices.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return run_identity(cfg, {})
    choices = dict(hydra.runtime.choices)
    if hydra.mode != RunMode.MULTIRUN:
        return run_identity(cfg, choices)
    sweep_dir = Path(str(hydra.sweep.dir))
    sweep_overrides, search_params = _sweep_definition(sweep_dir, hydra)
    return run_identity(cfg, choices, sweep_dir, sweep_overrides, search_params,
                        list(hydra.overrides.task), int(hydra.job.num))


def _sweep_definition(sweep_dir: Path, hydra: Any) -> tuple[list[str], list[str]]:
    """The sweep's own overrides (sweep syntax kept) and a search's parameter keys.

    Hydra writes them to ``<sweep>/multirun.yaml`` before the jobs start; a job launched in
    another process (joblib, SLURM) reads them from there.
    """
    path = sweep_dir / "multirun.yaml"
    # Hydra's own records, not fmc's config: a sweeper without parameters has no such key.
    try:
        saved = OmegaConf.load(path)
        overrides = list(OmegaConf.select(saved, "hydra.overrides.task") or [])
        params = OmegaConf.select(saved, "hydra.sweeper.params")
    except Exception as error:  # noqa: BLE001 - the name loses its suffix, nothing more
        log.debug("no sweep definition in %s: %s", path, error)
        overrides = list(hydra.overrides.task)
        params = OmegaConf.select(hydra, "sweeper.params")
    keys = [str(key) for key in params.keys()] if params else []
    return [str(o) for o in overrides], keys
