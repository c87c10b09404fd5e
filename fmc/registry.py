"""``python -m fmc.registry input=SWEEP_OR_MODELS output=models.zip``: a model package to share.

``input`` is a training sweep's folder (each run's best checkpoint) or a folder with a
``models.yaml``; the zip holds the checkpoints, their sha256 in ``models.yaml`` and a model card
(:mod:`fmc.inference.packages`). ``fmc.predict ckpt=auto registry=models.zip`` (or its URL) and
``fmc.challenge registry=...`` read it. ``output=`` is refused (exit 2, nothing written) when it
is one of the source's checkpoints or its ``models.yaml`` (by any spelling), a folder, under a
file, or an existing file that is not a model package; a failed export leaves what was there.

Settings: ``conf/registry.yaml`` (``action=export``, the one action so far).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.core.errors import FmcConfigError

ACTIONS = ("export",)


@dataclass(frozen=True)
class RegistrySettings:
    """What ``fmc.registry`` does, read once from ``conf/registry.yaml``."""

    action: str
    input: Path
    output: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RegistrySettings:
        """The settings of ``cfg``; one line naming the key for a value it cannot use."""
        action = str(cfg.action)
        if action not in ACTIONS:
            raise FmcConfigError(f"action={action}: choose one of {', '.join(ACTIONS)} "
                                 "(conf/registry.yaml)")
        return cls(action=action, input=Path(str(cfg.input)), output=Path(str(cfg.output)))


@hydra_entry("registry", "fmc.registry")
def main(cfg: DictConfig) -> Path:
    """Hydra entry point (see ``conf/registry.yaml``): write the package, return its path."""
    from fmc.inference.packages import export_package

    settings = RegistrySettings.from_config(cfg)
    written = export_package(settings.input, settings.output)
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
