"""``python -m fmc.synth``: Synthetic view/fusion pairs from a simulated specimen and light sheet.

Settings: ``conf/synth.yaml``, read once into
:class:`~fmc.simulation.synth_command.SynthCommandSettings`; the pairs are made by
:mod:`fmc.simulation.synth`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.simulation.synth_command import SynthCommandSettings, run


@hydra_entry("synth", "fmc.synth")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/synth.yaml``): its settings, read once, then the work."""
    run(SynthCommandSettings.from_config(cfg))


if __name__ == "__main__":
    main()
