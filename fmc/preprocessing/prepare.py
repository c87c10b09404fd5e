"""``python -m fmc.prepare``: TIFF pairs → training-ready H5 files and split lists.

Thin entry point: configuration in ``conf/prepare.yaml``; logic in :mod:`fmc.preprocessing.conversion`,
:mod:`fmc.preprocessing.channels`, :mod:`fmc.io.h5` and :mod:`fmc.preprocessing.splits`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.config_values import flag, real_number, whole_number
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.locations import embedded_h5_dir
from fmc.io.h5 import COMPRESSIONS
from fmc.preprocessing.conversion import ConversionResult, convert_folder
from fmc.preprocessing.embedded import prune_default_h5, raw_root_or_embedded
from fmc.preprocessing.splits import shape_mismatches, write_lists

log = logging.getLogger("fmc.prepare")


def folders(cfg: DictConfig) -> tuple[Path, Path]:
    """Input and output folders from the config (embedded dataset when input is null)."""
    if cfg.input is None:
        source = raw_root_or_embedded(None)
        if cfg.output is None:
            prune_default_h5(source)  # the embedded dataset's own folder: drop older plans
        return source, Path(cfg.output) if cfg.output is not None else embedded_h5_dir()
    source = Path(cfg.input)
    output = Path(cfg.output) if cfg.output is not None else \
        source.with_name(source.name + "_h5")
    if output.resolve() == source.resolve():
        raise FmcConfigError(f"output={output} is the input folder: choose another folder")
    return source, output


def prepare(cfg: DictConfig) -> list[ConversionResult]:
    """Convert, write the lists, and fail (after finishing the others) if any file failed or a
    pair's two volumes differ in shape."""
    where = "conf/prepare.yaml"
    workers = whole_number(cfg.workers, "workers", 1, where)
    fractions = tuple(real_number(cfg.split[part], f"split.{part}", where, minimum=0.0)
                      for part in ("train", "val", "test"))
    split_seed = whole_number(cfg.split.seed, "split.seed", 0, where)
    max_foreground = whole_number(cfg.max_foreground, "max_foreground", 1, where)
    working_spacing = real_number(cfg.working_spacing_um, "working_spacing_um", where, 0.0, True)
    compression = str(cfg.compression).lower()
    if compression not in COMPRESSIONS:
        raise FmcConfigError(f"compression={cfg.compression}: choose one of "
                             f"{', '.join(COMPRESSIONS)} (conf/prepare.yaml)")
    source, output = folders(cfg)
    overwrite, progress = flag(cfg.overwrite, "overwrite", where), flag(cfg.progress, "progress", where)
    results = convert_folder(source, output, workers=workers, overwrite=overwrite,
                             max_foreground=max_foreground, working_spacing_um=working_spacing,
                             compression=compression, progress=progress)
    lists = write_lists(output, fractions, split_seed)
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
