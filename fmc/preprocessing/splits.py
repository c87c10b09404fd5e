"""Train/val/test split lists in RWTH-GE's format: one ``angle.h5;fused.h5`` row per image.

Paths are relative to the H5 folder (absolute paths in hand-written lists work too). Files:
``lists/study{S}_{content}_{train,val,test}.csv`` and, over all studies,
``lists/all_{content}_{train,val,test}.csv``. An image is in the same split in both.

Leave-one-study-out lists, for every content with two or more studies:
``lists/holdout{K}_{content}_train.csv`` and ``_val.csv`` are the train and validation lists of
every other study, ``_test.csv`` lists all of study K's images (none of them was trained or
selected on): how a model does on a study it has never seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import natural_key, write_text_atomic
from fmc.core.naming import (
    ANGLE,
    LIST_DELIMITER,
    SPLITS,
    list_file_name,
    lists_prefix,
    partner_name,
    split_list_rows,
)
from fmc.io.h5 import is_complete, read_attrs


@dataclass(frozen=True)
class PairEntry:
    """One listed image: its angle and fused H5 files (relative to the H5 folder)."""

    angle: str
    fused: str
    study: int | None
    content: str | None


def find_h5_pairs(h5_dir: str | Path) -> list[PairEntry]:
    """Complete ``*_angle.h5`` / ``*_fused.h5`` pairs in ``h5_dir`` with their study and content.

    Pairs whose two volumes differ in shape are left out (training could not use them); see
    :func:`shape_mismatches`.
    """
    return _scan_pairs(h5_dir)[0]


def shape_mismatches(h5_dir: str | Path) -> list[str]:
    """One message per complete pair of ``h5_dir`` whose angle and fused shapes differ."""
    return _scan_pairs(h5_dir)[1]


def _scan_pairs(h5_dir: str | Path) -> tuple[list[PairEntry], list[str]]:
    h5_dir = Path(h5_dir)
    entries, mismatches = [], []
    for angle in sorted(h5_dir.glob(f"*_{ANGLE}.h5"), key=lambda p: natural_key(p.name)):
        fused = angle.with_name(partner_name(angle.name))
        if not (fused.exists() and is_complete(angle) and is_complete(fused)):
            continue
        attrs = read_attrs(fused)
        angle_attrs = read_attrs(angle)
        shapes = angle_attrs.get("shape"), attrs.get("shape")
        if None not in shapes and list(shapes[0]) != list(shapes[1]):
            mismatches.append(f"{angle_attrs.get('source') or angle.name} {list(shapes[0])} and "
                              f"{attrs.get('source') or fused.name} {list(shapes[1])} differ in "
                              "shape: pair left out of the split lists")
            continue
        study = attrs.get("study") if attrs.get("study") is not None else angle_attrs.get("study")
        content = attrs.get("content") or angle_attrs.get("content")
        entries.append(PairEntry(angle.name, fused.name, study, content))
    return entries, mismatches


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Numbers of train/val/test images for ``n`` images.

    Rounded shares of ``fractions`` (train, val, test); with 3 or more images every split whose
    fraction is positive gets at least one image, and train keeps at least one.
    """
    train, val, test = (float(f) for f in fractions)
    if min(train, val, test) < 0 or not np.isclose(train + val + test, 1.0):
        raise FmcConfigError(f"split fractions {list(fractions)} must be ≥ 0 and sum to 1 "
                             "(split.train/val/test)")
    n_val, n_test = int(round(val * n)), int(round(test * n))
    if n >= 3:
        n_val = max(n_val, 1 if val > 0 else 0)
        n_test = max(n_test, 1 if test > 0 else 0)
    while n_val + n_test >= n and n > 0 and (n_val or n_test):
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def assign_splits(entries: Sequence[PairEntry], fractions: Sequence[float], seed: int
                  ) -> dict[str, list[PairEntry]]:
    """Split by image, per (study, content) group, seeded and independent of file order."""
    groups: dict[tuple, list[PairEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.study, entry.content), []).append(entry)
    result: dict[str, list[PairEntry]] = {name: [] for name in SPLITS}
    for key in sorted(groups, key=lambda k: (str(k[0]), str(k[1]))):
        members = sorted(groups[key], key=lambda e: natural_key(e.angle))
        # One generator per group, so adding a study does not reshuffle the others.
        group_seed = [int(seed), -1 if key[0] is None else int(key[0]),
                      sum(map(ord, str(key[1])))]
        order = np.random.default_rng(group_seed).permutation(len(members))
        n_train, n_val, _ = split_counts(len(members), fractions)
        for rank, index in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            result[split].append(members[index])
    for split in SPLITS:
        result[split].sort(key=lambda e: natural_key(e.angle))
    return result


def list_text(entries: Sequence[PairEntry]) -> str:
    """RWTH-GE's CSV: ``angle;fused`` per line, no header."""
    return "".join(f"{e.angle}{LIST_DELIMITER}{e.fused}\n" for e in entries)


def write_lists(h5_dir: str | Path, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
                lists_dir: str | Path | None = None) -> list[Path]:
    """Write the split lists for every complete pair in ``h5_dir``; returns the files written."""
    h5_dir = Path(h5_dir)
    lists_dir = Path(lists_dir) if lists_dir is not None else h5_dir / "lists"
    entries = find_h5_pairs(h5_dir)
    if not entries:
        return []
    splits = assign_splits(entries, fractions, seed)
    written = []
    combos = sorted({(e.study, e.content) for e in entries}, key=lambda k: (str(k[0]), str(k[1])))
    for study, content in combos:
        study_name = "unknown" if study is None else str(study)
        content_name = content or "unknown"
        for split in SPLITS:
            rows = [e for e in splits[split] if (e.study, e.content) == (study, content)]
            written.append(write_text_atomic(
                lists_dir / list_file_name(lists_prefix(study_name), content_name, split),
                list_text(rows)))
    for content in sorted({e.content or "unknown" for e in entries}):
        for split in SPLITS:
            rows = [e for e in splits[split] if (e.content or "unknown") == content]
            written.append(write_text_atomic(lists_dir / list_file_name("all", content, split),
                                             list_text(rows)))
        studies = sorted({e.study for e in entries
                          if (e.content or "unknown") == content and e.study is not None})
        if len(studies) < 2:
            continue
        for held_out in studies:
            for split in SPLITS:
                if split == "test":
                    rows = [e for e in entries if e.study == held_out
                            and (e.content or "unknown") == content]
                else:
                    rows = [e for e in splits[split] if e.study not in (held_out, None)
                            and (e.content or "unknown") == content]
                written.append(write_text_atomic(
                    lists_dir / list_file_name(lists_prefix("all", held_out), content, split),
                    list_text(rows)))
    return written


def read_list(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, Path]]:
    """Read a split list (RWTH-GE's format, or one a user wrote by hand).

    Each non-empty line is ``angle;fused`` (a ``,`` delimiter and a header line naming ``angle``
    are accepted too); relative paths are resolved against ``root`` (default: the folder above
    the list's ``lists/`` folder, else the list's folder).

    Raises
    ------
    FmcInputError
        If the list is missing, a line does not have two entries, or a listed file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FmcInputError(f"{path}: split list does not exist")
    if root is None:
        root = path.parent.parent if path.parent.name == "lists" else path.parent
    root = Path(root)
    pairs = []
    for number, parts in split_list_rows(path):
        if len(parts) != 2 or not all(parts):
            raise FmcInputError(f"{path}:{number}: expected 'angle.h5;fused.h5', got "
                                f"{LIST_DELIMITER.join(parts)!r}")
        angle, fused = (Path(p) if Path(p).is_absolute() else root / p for p in parts)
        for listed in (angle, fused):
            if not listed.exists():
                raise FmcInputError(f"{path}:{number}: {listed} does not exist")
        pairs.append((angle, fused))
    return pairs
