"""``python -m fmc.train``: train one study/content model (or a sweep of them with --multirun).

Thin entry point: configuration in ``conf/train.yaml`` and its groups; the network and training
step in :mod:`fmc.module`, the data in :mod:`fmc.data`, the run's assembly in
:mod:`fmc.training`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.cli import hydra_entry


@hydra_entry("train", "fmc.train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point (see ``conf/train.yaml``); returns the best ``val/n_ssim``."""
    from fmc.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
