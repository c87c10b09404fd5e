"""``python -m fmc.train``: train one study/content model (or a sweep of them with --multirun).

Thin entry point: configuration in ``conf/train.yaml`` and its groups; the network and training
step in :mod:`fmc.models.module`, the data in :mod:`fmc.data.datamodule`, the run's assembly in
:mod:`fmc.training.fit`. ``profile=auto`` (the default) becomes ``profile=cpu`` or ``profile=gpu``
before Hydra starts, and the facts of every known study join the config as ``study_facts``
(:mod:`fmc.training.profile`), so ``--cfg job`` shows what will train and on what.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.reporting.choice_lists import choices_text


@hydra_entry("train", "fmc.train", help_text=lambda: choices_text("train"))
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point (see ``conf/train.yaml``); returns the best ``val/n_ssim``."""
    from fmc.training.fit import train

    return train(cfg)


if __name__ == "__main__":
    from fmc.core.command_line import with_extra_overrides
    from fmc.training.profile import with_profile, with_study_facts

    # $FMC_OVERRIDES first: the profile is chosen from the whole command line.
    sys.argv = with_study_facts(with_profile(with_extra_overrides(sys.argv, "train")))
    main()
