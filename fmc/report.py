"""``python -m fmc.report``: One table and figures for a sweep or a set of runs.

Settings: ``conf/report.yaml``, read once into :class:`~fmc.reporting.report.ReportSettings`;
the work is done by :mod:`fmc.reporting.report`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.reporting.report import ReportSettings, run


@hydra_entry("report", "fmc.report")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (see ``conf/report.yaml``): its settings, read once, then the work."""
    run(ReportSettings.from_config(cfg))


if __name__ == "__main__":
    main()
