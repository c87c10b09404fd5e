"""``python -m fmc.export ckpt=... format=... output=...``: a checkpoint for other tools.

``format``: torchscript, onnx or bioimageio.

Settings: ``conf/export.yaml``; the work is done by :mod:`fmc.inference.export`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from fmc.core.cli import hydra_entry
from fmc.core.config_values import whole_numbers


@hydra_entry("export", "fmc.export")
def main(cfg: DictConfig):
    """Hydra entry point (see ``conf/export.yaml``)."""
    from fmc.inference.export import export_checkpoint

    patch = None if cfg.patch is None else \
        whole_numbers(cfg.patch, "patch", 3, 1, "conf/export.yaml")
    result = export_checkpoint(str(cfg.ckpt), str(cfg.format), str(cfg.output), patch,
                               sample=cfg.sample,
                               zoo=None if cfg.zoo is None else OmegaConf.to_container(cfg.zoo))
    print(f"wrote {result.path} (largest difference to the checkpoint on a tile: "
          f"{result.max_abs_difference:.2e}) and its card {result.card}")
    return result


if __name__ == "__main__":
    main()
