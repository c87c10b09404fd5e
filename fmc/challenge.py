"""``python -m fmc.challenge``: the Fuse My Cells container's entry point (see conf/challenge.yaml).

Grand-challenge mounts the case under ``/input/images/fluorescence-lightsheet-3D-microscopy/`` and
collects ``/output/images/fused-fluorescence-lightsheet-3D-microscopy/<same name>``; both paths
are overridable (``input=... output=...``), which is how the tests run it without Docker.

A case that fails to predict (anything but a bad configuration or registry) is, by default,
written as its own input: the metric then scores it 0 instead of counting a missing file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.core.errors import FmcConfigError, FmcInputError

log = logging.getLogger("fmc.challenge")
ON_ERROR = ("identity", "fail")


def challenge_files(folder: str | Path) -> list[Path]:
    """Every ``.tif``/``.tiff`` in the input folder (names are kept as they are)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FmcInputError(f"input={folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff")
                   and p.is_file() and not p.name.startswith("."))
    if not files:
        raise FmcInputError(f"input={folder}: no .tif/.tiff file")
    return files


def write_identity(source: Path, output: Path) -> Path:
    """Copy a view to the output (as a valid TIFF with its metadata), the safe answer."""
    from fmc.io.tiff import read_volume, write_volume

    volume, meta = read_volume(source)
    return write_volume(output / source.name, volume, meta)


@hydra_entry("challenge", "fmc.challenge")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from fmc.inference.prediction import check_output_folder, predict_file, settings_from
    from fmc.inference.runner import ModelPicker

    if cfg.on_error not in ON_ERROR:
        raise FmcConfigError(f"on_error={cfg.on_error!r}: choose one of {', '.join(ON_ERROR)}")
    settings = settings_from(cfg)
    files = challenge_files(cfg.input)
    picker = ModelPicker.from_config("auto", str(cfg.registry), str(cfg.device))
    output = check_output_folder(cfg.output)
    failed, missing = 0, []
    for source in files:
        started = time.perf_counter()
        try:
            model = picker.pick(source)
            written = predict_file(model, source, output, settings)
        except Exception as error:  # noqa: BLE001 - one bad case must not lose the others
            if cfg.on_error == "fail":
                raise
            failed += 1
            log.error("%s: prediction failed (%s: %s); writing the input instead", source.name,
                      type(error).__name__, error)
            try:
                written = write_identity(source, output)
            except Exception as second:  # noqa: BLE001 - unreadable input: nothing to write
                log.error("%s: cannot write the input either (%s)", source.name, second)
                missing.append(source.name)
                continue
        log.info("%s → %s in %.1f s", source.name, written, time.perf_counter() - started)
    identity = failed - len(missing)  # the failed cases whose input could be written
    print(f"fmc.challenge: {len(files) - failed} of {len(files)} case(s) predicted into {output}"
          + (f"; {identity} written as their input" if identity else ""))
    if missing:
        raise FmcInputError(f"no output for {', '.join(missing)} (unreadable input)")


if __name__ == "__main__":
    main()
