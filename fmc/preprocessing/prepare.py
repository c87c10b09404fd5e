"""What ``python -m fmc.prepare`` does: its settings (:class:`PrepareSettings`, the keys of
``conf/prepare.yaml``, read once) and :func:`prepare`, which turns TIFF pairs into
training-ready H5 files and split lists.

The work is done by :mod:`fmc.preprocessing.conversion`, :mod:`fmc.preprocessing.channels`,
:mod:`fmc.io.h5` and :mod:`fmc.preprocessing.splits`; this module works without Hydra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.config_values import flag, real_number, whole_number
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.locations import embedded_h5_dir
from fmc.io.h5 import COMPRESSIONS
from fmc.preprocessing.conversion import ConversionResult, convert_folder
from fmc.preprocessing.embedded import prune_default_h5, raw_root_or_embedded
from fmc.preprocessing.splits import shape_mismatches, split_counts, write_lists

log = logging.getLogger("fmc.prepare")

WHERE = "conf/prepare.yaml"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PrepareSettings:
    """What ``fmc.prepare`` converts and how: the keys of ``conf/prepare.yaml`` (the one home of
    their defaults), read once by :meth:`from_config`. ``verbose`` is read by :mod:`fmc.core.logs`.

    Attributes
    ----------
    input : Path or None
        Folder of TIFFs; None: the embedded synthetic dataset.
    output : Path or None
        H5 folder; None: the embedded dataset's own H5 folder, else ``<input>_h5`` beside the
        input.
    workers : int
        Processes converting files in parallel.
    overwrite : bool
        Rebuild H5 files that are already complete (otherwise they are skipped).
    split : tuple of 3 floats
        ``split.train``, ``split.val`` and ``split.test``: the shares of the images (≥ 0, sum 1).
    split_seed : int
        ``split.seed``: the seed of the split.
    max_foreground : int
        Foreground voxels kept per fused file as patch centres.
    compression : str
        H5 compression of the volumes (lower case): one of :data:`fmc.io.h5.COMPRESSIONS`.
    working_spacing_um : float
        Voxel size (µm, > 0) of the grid the surface distance and light direction are computed
        on.
    progress : bool
        Progress bar over files.
    """

    input: Path | None
    output: Path | None
    workers: int
    overwrite: bool
    split: tuple[float, float, float]
    split_seed: int
    max_foreground: int
    compression: str
    working_spacing_um: float
    progress: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PrepareSettings:
        """The settings of a composed ``conf/prepare.yaml`` config, checked before any file is
        converted; the folders are read by :func:`prepare`.

        Raises
        ------
        FmcConfigError
            One line naming the first key whose value cannot be used.
        """
        workers = whole_number(cfg.workers, "workers", 1, WHERE)
        fractions = tuple(real_number(cfg.split[part], f"split.{part}", WHERE, minimum=0.0)
                          for part in SPLITS)
        split_counts(0, fractions)  # shares < 0 or not summing to 1: one line before any work
        split_seed = whole_number(cfg.split.seed, "split.seed", 0, WHERE)
        max_foreground = whole_number(cfg.max_foreground, "max_foreground", 1, WHERE)
        working_spacing = real_number(cfg.working_spacing_um, "working_spacing_um", WHERE, 0.0,
                                      True)
        compression = str(cfg.compression).lower()
        if compression not in COMPRESSIONS:
            raise FmcConfigError(f"compression={cfg.compression}: choose one of "
                                 f"{', '.join(COMPRESSIONS)} ({WHERE})")
        return cls(input=None if cfg.input is None else Path(str(cfg.input)),
                   output=None if cfg.output is None else Path(str(cfg.output)),
                   workers=workers, overwrite=flag(cfg.overwrite, "overwrite", WHERE),
                   split=fractions, split_seed=split_seed, max_foreground=max_foreground,
                   compression=compression, working_spacing_um=working_spacing,
                   progress=flag(cfg.progress, "progress", WHERE))


def folders(settings: PrepareSettings) -> tuple[Path, Path]:
    """Input and output folders of ``settings`` (the embedded dataset when input is None)."""
    if settings.input is None:
        source = raw_root_or_embedded(None)
        if settings.output is None:
            prune_default_h5(source)  # the embedded dataset's own folder: drop older plans
        return source, settings.output if settings.output is not None else embedded_h5_dir()
    source = settings.input
    output = settings.output if settings.output is not None else \
        source.with_name(source.name + "_h5")
    if output.resolve() == source.resolve():
        raise FmcConfigError(f"output={output} is the input folder: choose another folder")
    return source, output


def prepare(settings: PrepareSettings) -> list[ConversionResult]:
    """Convert, write the lists, and fail (after finishing the others) if any file failed or a
    pair's two volumes differ in shape.

    Parameters
    ----------
    settings : PrepareSettings
        What to convert and how (:meth:`PrepareSettings.from_config`).

    Returns
    -------
    list of ConversionResult
        One per TIFF file.

    Raises
    ------
    FmcInputError
        After the other files are done, if a file failed or a pair is unusable.
    """
    source, output = folders(settings)
    results = convert_folder(source, output, workers=settings.workers,
                             overwrite=settings.overwrite, max_foreground=settings.max_foreground,
                             working_spacing_um=settings.working_spacing_um,
                             compression=settings.compression, progress=settings.progress)
    lists = write_lists(output, settings.split, settings.split_seed)
    counts = {status: sum(r.status == status for r in results)
              for status in ("written", "skipped", "failed")}
    print(f"prepared {source} -> {output}: {counts['written']} written, {counts['skipped']} "
          f"already complete, {counts['failed']} failed; {len(lists)} split lists in "
          f"{output / 'lists'}")
    # A pair whose two volumes differ in shape converts file by file but cannot be trained on.
    mismatches = shape_mismatches(output)
    for message in mismatches:
        log.error("%s", message)
    failed = [r for r in results if r.status == "failed"]
    problems = []
    if failed:
        problems.append(f"{len(failed)} of {len(results)} file(s) failed: " + "; ".join(
            r.message for r in failed[:3]) + (" ..." if len(failed) > 3 else ""))
    if mismatches:
        problems.append(f"{len(mismatches)} pair(s) unusable: " + "; ".join(mismatches[:3])
                        + (" ..." if len(mismatches) > 3 else ""))
    if problems:
        raise FmcInputError("; ".join(problems))
    return results
