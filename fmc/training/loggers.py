"""Where a training run's metrics go (the logger group: ``logger=wandb|csv|none``): one registry,
:data:`LOGGERS`, name → builder of a Lightning logger.

A builder takes the composed config, the run folder and the run's
:class:`fmc.training.run_identity.RunIdentity` and returns a Lightning logger, or False for none.
Other packages add loggers through the entry point group ``fmc.loggers`` (with a
``conf/logger/<name>.yaml`` of their own, found through ``FMC_CONFIG_DIRS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fmc.core.named_choices import Registry

LOGGERS = Registry("logger", "logger.name", "the logger group: logger=<name>, conf/logger/",
                   group="fmc.loggers")


@LOGGERS.register("wandb")
def wandb_logger(cfg: DictConfig, output_dir: Path, identity: Any) -> Any:
    """Weights & Biases, offline unless ``logger.offline=false`` (or ``WANDB_MODE``)."""
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE") or ("offline" if cfg.logger.offline else "online")
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=identity.name,
                       group=identity.group, tags=list(identity.tags), save_dir=str(output_dir),
                       mode=mode, job_type=identity.job_type)


@LOGGERS.register("csv")
def csv_logger(cfg: DictConfig, output_dir: Path, identity: Any) -> Any:
    """Lightning's CSV files under the run folder's ``csv/``."""
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=str(output_dir), name="csv")


@LOGGERS.register("none")
def no_logger(cfg: DictConfig, output_dir: Path, identity: Any) -> bool:
    """No logger: metrics.json and the run's own files only."""
    return False


def build_logger(cfg: DictConfig, output_dir: Path, identity: Any = None) -> Any:
    """The configured Lightning logger (W&B offline by default), or False for none.

    ``identity`` (:class:`fmc.training.run_identity.RunIdentity`) names the W&B run, its group,
    job type and tags; None: worked out from ``cfg`` here.
    """
    from fmc.training.run_identity import current_identity

    builder = LOGGERS.get(str(cfg.logger.name))
    return builder(cfg, output_dir, identity or current_identity(cfg))
