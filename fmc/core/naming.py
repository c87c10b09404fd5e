"""File and folder names every stage agrees on (one home for each naming convention).

The Fuse My Cells data pair a single view ``image_<i>_<content>_angle.tif`` with its multi-view
fusion ``image_<i>_<content>_fused.tif``; ``fmc.prepare`` keeps the stem and writes ``.h5``. Split
lists are ``<prefix>_<content>_<split>.csv`` with ``angle;fused`` rows, where the prefix names
the studies (:func:`lists_prefix`). A finished training run leaves :data:`METRICS_FILE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

TIFF_SUFFIXES = (".tif", ".tiff")
H5_SUFFIXES = (".h5", ".hdf5")
# A zarr store is a folder; OME-Zarr images end in .ome.zarr.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
ANGLE, FUSED = "angle", "fused"
LIST_DELIMITER = ";"
SPLITS = ("train", "val", "test")
METRICS_FILE = "metrics.json"
# A sweep's run that had nothing to train (e.g. no membrane data in a study): the reason, one line.
SKIPPED_FILE = "skipped.txt"
# A run's whole test volumes scored one by one (file, study, content, N_SSIM, baselines).
TEST_TABLE = "test_volumes.csv"
# A run's whole-volume validation figures, one PNG per validation.
VALIDATION_IMAGES = "validation_images"
# The metadata key fmc.predict and fmc.challenge write into every volume they make (value: what
# it holds): a later run may replace a file that carries it, and no other (fmc.core.protected).
OUTPUT_MARK = "fmc_output"

_PAIR_NAME = re.compile(
    r"^(?P<stem>.+)_(?P<kind>angle|fused)(?P<suffix>\.(?:tiff?|h5|hdf5|ome\.zarr|zarr))$",
    re.IGNORECASE)


def is_tiff(name: str | Path) -> bool:
    """True for a ``.tif`` / ``.tiff`` file name (any case)."""
    return Path(name).suffix.lower() in TIFF_SUFFIXES


def is_zarr(name: str | Path) -> bool:
    """True for a ``.zarr`` / ``.ome.zarr`` name (a zarr store is a folder)."""
    return str(name).rstrip("/").lower().endswith(".zarr")


def volume_stem(name: str | Path) -> str:
    """The name without its volume suffix: ``a.ome.zarr``, ``a.tif``, ``a.h5`` → ``a``."""
    base = Path(str(name).rstrip("/")).name
    for suffix in (*ZARR_SUFFIXES, *TIFF_SUFFIXES, *H5_SUFFIXES):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_h5(name: str | Path) -> bool:
    """True for a ``.h5`` / ``.hdf5`` file name (any case)."""
    return Path(name).suffix.lower() in H5_SUFFIXES


def pair_parts(name: str | Path) -> tuple[str, str, str] | None:
    """``(stem, kind, suffix)`` of ``image_3_nucleus_angle.tif`` → ``('image_3_nucleus', 'angle',
    '.tif')``; None for a name outside the pair convention."""
    match = _PAIR_NAME.match(Path(name).name)
    return None if match is None else (match["stem"], match["kind"].lower(), match["suffix"])


def file_kind(name: str | Path) -> str:
    """``'fused'`` for a ``*_fused`` file, else ``'angle'`` (a single view, paired or not)."""
    parts = pair_parts(name)
    return FUSED if parts is not None and parts[1] == FUSED else ANGLE


def is_ground_truth(name: str | Path) -> bool:
    """True for a fusion (``*_fused.*``): never an input to predict."""
    return file_kind(name) == FUSED


def partner_name(name: str | Path) -> str | None:
    """The other file of the pair (angle ↔ fused, same suffix), or None outside the convention."""
    parts = pair_parts(name)
    if parts is None:
        return None
    stem, kind, suffix = parts
    return f"{stem}_{FUSED if kind == ANGLE else ANGLE}{suffix}"


def pair_file_names(index: int, content: str, suffix: str = ".tif") -> tuple[str, str]:
    """The challenge's names of pair ``index``: ``image_<i>_<content>_angle.tif`` and ``_fused``."""
    stem = f"image_{index}_{content}"
    return f"{stem}_{ANGLE}{suffix}", f"{stem}_{FUSED}{suffix}"


def h5_name(tiff_name: str) -> str:
    """``image_3_nucleus_angle.tif`` → ``image_3_nucleus_angle.h5`` (what fmc.prepare writes)."""
    return f"{tiff_name.rsplit('.', 1)[0]}.h5"


def lists_prefix(study: object, holdout: object = None) -> str:
    """Split-list name prefix: ``study3`` for study 3, ``all`` for all studies, ``holdout3`` for
    every study but 3 (leave-one-study-out: :func:`fmc.preprocessing.splits.write_lists`)."""
    if holdout is not None and str(holdout).strip().lower() not in ("none", "null", ""):
        return f"holdout{str(holdout).strip()}"
    text = str(study).strip().lower()
    return "all" if text in ("all", "none", "null", "synthetic", "") else f"study{text}"


def list_file_name(prefix: str, content: str, split: str) -> str:
    """``study3_nucleus_train.csv``: the split list of ``prefix`` (:func:`lists_prefix`)."""
    return f"{prefix}_{content}_{split}.csv"


def split_list_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a split list's rows: ``angle;fused`` (``,`` accepted too),
    blank lines, ``#`` comments and a header naming ``angle`` skipped."""
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [part.strip() for part in re.split(r"[;,]", line)]
        if number == 1 and fields[0].lower() in (ANGLE, "input", "image"):
            continue
        yield number, fields
