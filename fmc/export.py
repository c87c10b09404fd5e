"""``python -m fmc.export ckpt=... format=torchscript|onnx|bioimageio out=...``: a checkpoint for other tools.

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

    tile = None if cfg.tile is None else whole_numbers(cfg.tile, "tile", 3, 1, "conf/export.yaml")
    zoo = OmegaConf.to_container(cfg.zoo) if cfg.get("zoo") else None
    result = export_checkpoint(str(cfg.ckpt), str(cfg.format), str(cfg.out), tile,
                               sample=cfg.get("sample"), zoo=zoo)
    print(f"wrote {result.path} (largest difference to the checkpoint on a tile: "
          f"{result.max_abs_difference:.2e}) and its card {result.card}")
    return result


if __name__ == "__main__":
    main()
