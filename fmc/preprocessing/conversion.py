"""TIFF → training-ready H5: normalisation, input channels, foreground coordinates.

Every input channel is computed as its spec says (:mod:`fmc.preprocessing.channel_specs`).

Used by ``python -m fmc.prepare``; importable without Hydra. See :mod:`fmc.io.h5` for the layout.
"""

from __future__ import annotations

import logging
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmc import __version__
from fmc.core.errors import FmcError, FmcInputError
from fmc.core.files import natural_key, remove_stale_parts, writable_folder
from fmc.core.logs import paced
from fmc.core.naming import ANGLE, file_kind, h5_name, is_tiff, partner_name
from fmc.core.normalization import (  # noqa: F401 - normalize_float32: its name here, kept
    PERCENTILE_HIGH,
    PERCENTILE_LOW,
    normalize_float32,
    volume_stats,
)
from fmc.core.studies import STUDIES
from fmc.io.h5 import COMPRESSION, FOREGROUND, RAW_IMAGE, is_complete, write_h5, written_by_fmc
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import read_volume
from fmc.preprocessing.channel_specs import VIEW, ChannelView, channel_spec, derived_channels
from fmc.preprocessing.channels import WORKING_SPACING_UM

log = logging.getLogger(__name__)

DEFAULT_MAX_FOREGROUND = 100_000
FOREGROUND_RULE = "normalised fused voxels >= the volume's mean (RWTH-GE's foreground rule)"


@dataclass
class ConversionResult:
    """What happened to one TIFF."""

    source: Path
    output: Path | None
    status: str  # 'written' | 'skipped' | 'failed'
    message: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def resolve_spacing(meta: VolumeMeta, source: Path) -> tuple[tuple[float, float, float], str]:
    """The volume's spacing, else its study's typical spacing, else 1 µm (with the reason)."""
    if meta.spacing_zyx is not None:
        return meta.spacing_zyx, "metadata"
    if meta.study in STUDIES:
        log.warning("%s: no voxel size in the metadata; using study %d's %s µm", source,
                    meta.study, STUDIES[meta.study].spacing_zyx)
        return STUDIES[meta.study].spacing_zyx, f"study {meta.study} default"
    log.warning("%s: no voxel size and no known study; assuming 1 µm voxels", source)
    return (1.0, 1.0, 1.0), "assumed 1 µm"


def foreground_coordinates(normalized: np.ndarray, max_count: int, seed: int
                           ) -> tuple[np.ndarray, float, int]:
    """A uniform random subset of the voxels at or above the mean, as uint16 ZYX rows.

    Two passes over z-slabs (count, then Bernoulli-sample at the rate that keeps about
    ``max_count``), so no index array of the whole foreground is ever built.

    Returns
    -------
    coordinates : numpy.ndarray
        ``(N, 3)`` uint16, sorted, N ≤ about ``max_count``.
    threshold : float
        The mean used as threshold.
    total : int
        Number of foreground voxels.
    """
    threshold = float(normalized.mean(dtype=np.float64))
    slab = 16
    total = sum(int(np.count_nonzero(normalized[z:z + slab] >= threshold))
                for z in range(0, normalized.shape[0], slab))
    rng = np.random.default_rng(seed)
    rate = min(1.0, max_count / total) if total else 0.0
    pieces = []
    for z0 in range(0, normalized.shape[0], slab):
        index = np.flatnonzero(normalized[z0:z0 + slab] >= threshold)
        if rate < 1.0:
            index = index[rng.random(len(index)) < rate]
        coordinates = np.stack(np.unravel_index(index, normalized[z0:z0 + slab].shape), axis=1)
        coordinates[:, 0] += z0
        pieces.append(coordinates)
    coordinates = np.concatenate(pieces) if pieces else np.zeros((0, 3), np.int64)
    if len(coordinates) > max_count:  # the Bernoulli draw can overshoot slightly
        coordinates = coordinates[np.sort(rng.choice(len(coordinates), max_count, replace=False))]
    return coordinates.astype(np.uint16), threshold, total


def convert_tiff(source: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                 max_foreground: int = DEFAULT_MAX_FOREGROUND,
                 working_spacing_um: float = WORKING_SPACING_UM,
                 compression: str | None = COMPRESSION) -> ConversionResult:
    """Convert one TIFF into one H5 in ``out_dir`` (see :mod:`fmc.io.h5`).

    A complete H5 of the same name is skipped unless ``overwrite``. Errors the user can fix
    (unreadable file, NaN voxels, ...) give a result with ``status='failed'``.
    """
    source, out_dir = Path(source), Path(out_dir)
    output = out_dir / h5_name(source.name)
    started = time.perf_counter()
    if not overwrite and is_complete(output):
        return ConversionResult(source, output, "skipped", "already complete")
    if output.exists() and not written_by_fmc(output):
        return ConversionResult(source, None, "failed", f"{output}: a file fmc did not write is "
                                "there (not an fmc H5 file); move it away or give another "
                                "output")
    caught: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            datasets, attrs = _convert(source, max_foreground, working_spacing_um)
            caught = [str(w.message) for w in recorded]
        write_h5(output, datasets, attrs, compression=compression)
    except FmcError as error:
        return ConversionResult(source, None, "failed", str(error),
                                time.perf_counter() - started, caught)
    return ConversionResult(source, output, "written", "", time.perf_counter() - started, caught)


def _convert(source: Path, max_foreground: int, working_spacing_um: float):
    volume, meta = read_volume(source)
    kind = file_kind(source)
    spacing, spacing_source = resolve_spacing(meta, source)
    stats = volume_stats(volume, name=str(source))
    if stats.high == stats.low:
        warnings.warn(f"{source}: constant volume (p{PERCENTILE_LOW:g} == p{PERCENTILE_HIGH:g} "
                      f"== {stats.low:g}); intensities left unnormalised", stacklevel=2)
    axes = STUDIES[meta.study].degradation_axis_indices if meta.study in STUDIES else None
    view = ChannelView(volume, spacing, axes, stats, working_spacing_um)
    normalized, _ = channel_spec(VIEW).compute(view)
    datasets = {RAW_IMAGE: normalized}  # the view; in a fused file, the training target
    attrs = {
        "kind": kind, "source": source.name, "study": meta.study, "content": meta.content,
        "spacing_zyx": list(spacing), "spacing_source": spacing_source,
        "shape": list(volume.shape), "dtype": str(volume.dtype),
        "normalization": f"percentile ({PERCENTILE_LOW:g}, {PERCENTILE_HIGH:g}), not clipped",
        "percentile_low": stats.low, "percentile_high": stats.high,
        "fmc_version": __version__, "metadata": meta.original,
    }
    if kind == ANGLE:
        for spec in derived_channels():
            datasets[spec.dataset], channel_attrs = spec.compute(view)
            attrs.update(channel_attrs)
    else:
        seed = zlib.crc32(source.name.encode())
        coordinates, threshold, total = foreground_coordinates(normalized, max_foreground, seed)
        datasets[FOREGROUND] = coordinates
        attrs.update(foreground_rule=FOREGROUND_RULE, foreground_threshold=threshold,
                     foreground_voxels=total)
    return datasets, attrs


def find_tiffs(input_dir: str | Path) -> list[Path]:
    """TIFF files directly in ``input_dir``, sorted; warns about angle/fused files without partner.

    Raises
    ------
    FmcInputError
        If the folder is missing or holds no TIFF.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FmcInputError(f"{input_dir}: input folder does not exist")
    files = sorted((p for p in input_dir.iterdir() if p.is_file() and is_tiff(p.name)
                    and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    if not files:
        raise FmcInputError(f"{input_dir}: no .tif/.tiff file found")
    names = {p.name.lower() for p in files}
    for path in files:
        partner = partner_name(path.name)
        if partner is None:
            continue
        if partner.lower() not in names and not any(
                partner.lower().rsplit(".", 1)[0] + ext in names for ext in (".tif", ".tiff")):
            log.warning("%s has no partner (%s missing): converted alone, not listed for "
                        "training", path, partner)
    return files


def convert_folder(input_dir: str | Path, out_dir: str | Path, *, workers: int = 1,
                   overwrite: bool = False, max_foreground: int = DEFAULT_MAX_FOREGROUND,
                   working_spacing_um: float = WORKING_SPACING_UM,
                   compression: str | None = COMPRESSION, progress: bool = True
                   ) -> list[ConversionResult]:
    """Convert every TIFF of ``input_dir`` into ``out_dir`` with ``workers`` processes."""
    files = find_tiffs(input_dir)
    out_dir = writable_folder(out_dir, "output")
    for stale in remove_stale_parts(out_dir):
        log.info("removed %s, left by a killed run", stale.name)
    kwargs = dict(overwrite=overwrite, max_foreground=max_foreground,
                  working_spacing_um=working_spacing_um, compression=compression)
    bar = _progress_bar(len(files), progress)
    results: list[ConversionResult] = []
    try:
        if workers <= 1:
            for path in _paced(files, len(files), bar):
                results.append(_report(convert_tiff(path, out_dir, **kwargs), bar))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(convert_tiff, path, out_dir, **kwargs) for path in files]
                for future in _paced(as_completed(futures), len(futures), bar):
                    results.append(_report(future.result(), bar))
    finally:
        if bar is not None:
            bar.close()
    order = {path: i for i, path in enumerate(files)}
    return sorted(results, key=lambda r: order[r.source])


def _report(result: ConversionResult, bar) -> ConversionResult:
    for message in result.warnings:
        log.warning("%s: %s", result.source.name, message)
    if result.status == "failed":
        log.error("%s", result.message)
    else:
        log.debug("%s %s (%.1f s)", result.status, result.source.name, result.seconds)
    if bar is not None:
        bar.update(1)
    return result


def _paced(items, total: int, bar):
    # Without a bar (progress=false, the embedded dataset), a line every 10 s or so.
    return items if bar is not None else paced(items, log, "preparing", total=total)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="preparing", unit="file", file=sys.stderr, leave=False)
