"""``python -m fmc.synth``: Synthetic view/fusion pairs from a simulated specimen and light sheet.

Settings: ``conf/synth.yaml``; the work is done by :mod:`fmc.simulation.synth`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.simulation.synth import run


@hydra_entry("synth", "fmc.synth")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/synth.yaml``)."""
    run(cfg)


if __name__ == "__main__":
    main()
