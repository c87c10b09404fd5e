"""``python -m fmc.evaluate``: Score predictions against fusions with the challenge's N_SSIM (and more).

Settings: ``conf/evaluate.yaml``; the work is done by :mod:`fmc.evaluation.evaluate`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.evaluation.evaluate import EvaluateSettings, evaluate


@hydra_entry("evaluate", "fmc.evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/evaluate.yaml``): its settings, read once, then the work."""
    evaluate(EvaluateSettings.from_config(cfg))


if __name__ == "__main__":
    main()
