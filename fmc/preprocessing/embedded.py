"""The embedded synthetic dataset: what every command uses when it is given no data.

``fmc.train``, ``fmc.report``, ``fmc.evaluate`` and ``fmc.prepare`` without a data folder work on
the dataset fmc ships as a generator (``data/synthetic`` TIFFs, prepared once into
``data/synthetic_h5`` with split lists). This module is the one place that decides it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fmc.core.errors import FmcInputError
from fmc.core.naming import h5_name
from fmc.preprocessing.conversion import convert_folder

log = logging.getLogger("fmc.prepare")


DEFAULT_H5_ROOT = Path("data/synthetic_h5")


def prune_default_h5(source: Path) -> list[Path]:
    """Remove H5 files of the default folder whose TIFF is no longer in ``source``.

    The embedded dataset's plan can change between versions; this folder belongs to fmc. All
    of them go when the TIFFs come from another generator version than the H5 files.
    """
    from fmc.simulation.synth import dataset_version

    expected = {h5_name(p.name) for p in source.glob("image_*_*.tif")}
    same_version = dataset_version(DEFAULT_H5_ROOT) == dataset_version(source)
    stale = [p for p in DEFAULT_H5_ROOT.glob("*.h5")
             if p.name not in expected or not same_version] \
        if DEFAULT_H5_ROOT.is_dir() else []
    for path in stale:
        path.unlink()
    return stale


def prepare_default_dataset(workers: int = 1, progress: bool = False) -> Path:
    """The embedded synthetic dataset as H5 files and split lists, made on first use.

    Synthesizes ``data/synthetic`` if needed
    (:func:`fmc.simulation.synth.ensure_default_dataset`), converts
    what is missing into ``data/synthetic_h5`` (see :func:`prune_default_h5`) and writes the
    split lists.
    """
    from fmc.io.h5 import is_complete
    from fmc.preprocessing.splits import write_lists
    from fmc.simulation.synth import VERSION_FILE, dataset_version, ensure_default_dataset

    source = ensure_default_dataset()
    stale = prune_default_h5(source)
    incomplete = [p for p in sorted(source.glob("image_*_*.tif"))
                  if not is_complete(DEFAULT_H5_ROOT / h5_name(p.name))]
    if stale or incomplete or not (DEFAULT_H5_ROOT / "lists").is_dir():
        log.info("no data root given: preparing %s into %s", source, DEFAULT_H5_ROOT)
        results = convert_folder(source, DEFAULT_H5_ROOT, workers=workers, progress=progress)
        failed = [r.message for r in results if r.status == "failed"]
        if failed:
            raise FmcInputError("preparing the default dataset failed: " + "; ".join(failed[:3]))
        write_lists(DEFAULT_H5_ROOT)
        version = dataset_version(source)
        if version is not None:
            (DEFAULT_H5_ROOT / VERSION_FILE).write_text(f"{version}\n")
    return DEFAULT_H5_ROOT


def h5_root_or_embedded(root: str | Path | None, key: str = "data.root") -> Path:
    """``root`` (an ``fmc.prepare`` output folder, which must exist) or, when None, the embedded
    dataset's H5 folder (prepared on first use).

    Raises
    ------
    FmcInputError
        If ``root`` is given and is not a folder (the message names ``key``).
    """
    if root is None:
        return prepare_default_dataset()
    root = Path(str(root))
    if not root.is_dir():
        raise FmcInputError(f"{key}={root}: no such folder (give the output folder of "
                            "fmc.prepare)")
    return root


def raw_root_or_embedded(raw: str | Path | None) -> Path:
    """``raw`` (a folder of TIFF pairs) or, when None, the embedded dataset's TIFFs."""
    if raw is not None:
        return Path(str(raw))
    from fmc.simulation.synth import ensure_default_dataset

    return ensure_default_dataset()
