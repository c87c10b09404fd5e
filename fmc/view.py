"""``python -m fmc.view view=... prediction=... target=auto``: volumes side by side in napari.

Settings: ``conf/view.yaml``, read once into
:class:`~fmc.reporting.napari_view.ViewSettings`; the work is done by
:mod:`fmc.reporting.napari_view`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.reporting.napari_view import ViewSettings, run


@hydra_entry("view", "fmc.view")
def main(cfg: DictConfig):
    """Hydra entry point (see ``conf/view.yaml``): its settings, read once, then the work."""
    return run(ViewSettings.from_config(cfg))


if __name__ == "__main__":
    main()
