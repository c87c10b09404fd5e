"""``python -m fmc.prepare``: TIFF pairs to normalised HDF5 volumes and split lists.

Settings: ``conf/prepare.yaml``; the work is done by :mod:`fmc.preprocessing.prepare`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.preprocessing.prepare import prepare


@hydra_entry("prepare", "fmc.prepare")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/prepare.yaml``)."""
    prepare(cfg)


if __name__ == "__main__":
    main()
