"""The embedded synthetic dataset: what every command uses when it is given no data.

``fmc.train``, ``fmc.report``, ``fmc.evaluate`` and ``fmc.prepare`` without a data folder work on
the dataset fmc ships as a generator: TIFF pairs synthesized on first use into
``$FMC_DATA/synthetic``, prepared once into ``$FMC_DATA/synthetic_h5`` with split lists, and
reused after. ``FMC_DATA`` defaults to a user cache folder (``~/.cache/fmc/data``; see
:mod:`fmc.core.locations`), so the data do not depend on the folder a command runs in. This
module is the one place that decides when the embedded dataset is used.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fmc.core.errors import FmcInputError
from fmc.core.locations import embedded_h5_dir
from fmc.core.logs import plural
from fmc.core.naming import h5_name
from fmc.preprocessing.conversion import convert_folder

log = logging.getLogger("fmc.prepare")


def prune_default_h5(source: Path) -> list[Path]:
    """Remove H5 files of the default folder whose TIFF is no longer in ``source``.

    The embedded dataset's plan can change between versions; this folder belongs to fmc. All
    of them go when the TIFFs come from another generator version than the H5 files.
    """
    from fmc.simulation.synth import dataset_version

    h5_root = embedded_h5_dir()
    expected = {h5_name(p.name) for p in source.glob("image_*_*.tif")}
    same_version = dataset_version(h5_root) == dataset_version(source)
    stale = [p for p in h5_root.glob("*.h5")
             if p.name not in expected or not same_version] \
        if h5_root.is_dir() else []
    for path in stale:
        path.unlink()
    return stale


def prepare_default_dataset(workers: int = 1, progress: bool = False) -> Path:
    """The embedded synthetic dataset as H5 files and split lists, made on first use.

    Synthesizes ``$FMC_DATA/synthetic`` if needed
    (:func:`fmc.simulation.synth.ensure_default_dataset`), converts
    what is missing into ``$FMC_DATA/synthetic_h5`` (see :func:`prune_default_h5`) and writes
    the split lists. Logs the folder it returns.
    """
    from fmc.io.h5 import is_complete
    from fmc.preprocessing.splits import write_lists
    from fmc.simulation.synth import VERSION_FILE, dataset_version, ensure_default_dataset

    h5_root = embedded_h5_dir()
    source = ensure_default_dataset()
    stale = prune_default_h5(source)
    incomplete = [p for p in sorted(source.glob("image_*_*.tif"))
                  if not is_complete(h5_root / h5_name(p.name))]
    if stale or incomplete or not (h5_root / "lists").is_dir():
        log.info("no data root given: preparing %s of %s into %s",
                 plural(len(incomplete), "TIFF file"), source, h5_root)
        started = time.perf_counter()
        results = convert_folder(source, h5_root, workers=workers, progress=progress)
        log.info("prepared %s in %.0f s", plural(sum(r.status == "written" for r in results),
                                                 "H5 file"), time.perf_counter() - started)
        failed = [r.message for r in results if r.status == "failed"]
        if failed:
            raise FmcInputError("preparing the default dataset failed: " + "; ".join(failed[:3]))
        write_lists(h5_root)
        version = dataset_version(source)
        if version is not None:
            (h5_root / VERSION_FILE).write_text(f"{version}\n")
    log.info("no data root given: using the embedded synthetic dataset in %s (FMC_DATA)", h5_root)
    return h5_root


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
    """``raw`` (a folder of TIFF pairs) or, when None, the embedded dataset's TIFFs (logged)."""
    if raw is not None:
        return Path(str(raw))
    from fmc.simulation.synth import ensure_default_dataset

    source = ensure_default_dataset()
    log.info("no data root given: using the embedded synthetic dataset in %s (FMC_DATA)", source)
    return source
