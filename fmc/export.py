"""``python -m fmc.export ckpt=... format=... output=...``: a checkpoint for other tools.

``format``: torchscript, onnx or bioimageio.

Settings: ``conf/export.yaml``, read once into
:class:`~fmc.inference.export_settings.ExportSettings`; the work is done by
:mod:`fmc.inference.export`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.inference.export_settings import ExportSettings


@hydra_entry("export", "fmc.export")
def main(cfg: DictConfig):
    """Hydra entry point (see ``conf/export.yaml``): its settings, read once, then the work."""
    settings = ExportSettings.from_config(cfg)
    from fmc.inference.export import run  # torch: once the settings are known to be usable

    return run(settings)


if __name__ == "__main__":
    main()
