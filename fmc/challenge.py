"""``python -m fmc.challenge``: the Fuse My Cells container's entry point (see conf/challenge.yaml).

Grand-challenge mounts the case under ``/input/images/fluorescence-lightsheet-3D-microscopy/`` and
collects ``/output/images/fused-fluorescence-lightsheet-3D-microscopy/<same name>``; both paths
are overridable (``input=... output=...``), which is how the tests run it without Docker.

A case that fails to predict (anything but a bad configuration or registry) is, by default,
written as its own input (``on_error=identity``): the metric then scores it 0 instead of counting
a missing file. The loop is fmc.predict's (:func:`fmc.inference.runner.predict_files`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.core.errors import FmcInputError
from fmc.reporting.choice_lists import choices_text

log = logging.getLogger("fmc.challenge")


def challenge_files(folder: str | Path) -> list[Path]:
    """Every ``.tif``/``.tiff`` in the input folder (names are kept as they are)."""
    from fmc.core.naming import is_tiff

    folder = Path(folder)
    if not folder.is_dir():
        raise FmcInputError(f"input={folder}: no such folder")
    files = sorted(p for p in folder.iterdir()
                   if is_tiff(p) and p.is_file() and not p.name.startswith("."))
    if not files:
        raise FmcInputError(f"input={folder}: no .tif/.tiff file")
    return files


@hydra_entry("challenge", "fmc.challenge", help_text=lambda: choices_text("challenge"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from fmc.inference.predict_settings import settings_from
    from fmc.inference.runner import (
        ModelPicker,
        check_on_error,
        check_output_folder,
        check_targets,
        predict_files,
    )

    on_error = check_on_error(str(cfg.on_error))
    settings = settings_from(cfg)
    files = challenge_files(cfg.input)
    # Outputs keep the inputs' names: coinciding folders would replace every case.
    check_targets(files, Path(str(cfg.output)), [p.name for p in files], settings.output_format)
    picker = ModelPicker.from_config("auto", str(cfg.registry), str(cfg.device))
    output = check_output_folder(cfg.output)
    result = predict_files(files, picker, output, settings, on_error=on_error)
    print(f"fmc.challenge: {result.predicted} of {len(files)} case(s) predicted into {output}"
          + (f"; {len(result.as_input)} written as their input" if result.as_input else ""))
    if result.missing:
        raise FmcInputError(f"no output for {', '.join(result.missing)} (unreadable input)")


if __name__ == "__main__":
    main()
