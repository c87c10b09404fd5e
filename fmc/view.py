"""``python -m fmc.view view=... prediction=... target=auto``: volumes side by side in napari.

Settings: ``conf/view.yaml``; the work is done by :mod:`fmc.reporting.napari_view`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry


@hydra_entry("view", "fmc.view")
def main(cfg: DictConfig):
    """Hydra entry point (see ``conf/view.yaml``)."""
    from fmc.reporting.napari_view import resolve_files, show, view_layers

    files = resolve_files(cfg.view, cfg.prediction, cfg.target)
    layers = view_layers(files)
    for layer in layers:
        print(f"{layer.attributes['name']}: {layer.data.shape} voxels, scale "
              f"{layer.attributes.get('scale', 'unknown')} µm")
    written = show(layers, int(cfg.ndisplay), bool(cfg.grid), cfg.screenshot)
    if written is not None:
        print(f"wrote {written}")
    return layers


if __name__ == "__main__":
    main()
