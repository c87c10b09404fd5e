"""``python -m fmc.prepare``: TIFF pairs to normalised HDF5 volumes and split lists.

Settings: ``conf/prepare.yaml``, read once into
:class:`~fmc.preprocessing.prepare.PrepareSettings`; the work is done by
:mod:`fmc.preprocessing.prepare`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.preprocessing.prepare import PrepareSettings, prepare


@hydra_entry("prepare", "fmc.prepare")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/prepare.yaml``): its settings, read once, then the work."""
    prepare(PrepareSettings.from_config(cfg))


if __name__ == "__main__":
    main()
