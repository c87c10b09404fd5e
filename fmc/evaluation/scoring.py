"""Scoring folders of volumes with the challenge metric: pair matching, baselines, tables.

Used by ``python -m fmc.evaluate`` and importable without Hydra.

A raw folder holds Fuse My Cells pairs ``image_<i>_<content>_angle.tif`` (the single view) and
``image_<i>_<content>_fused.tif`` (the ground truth). A prediction keeps the angle file's name.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import natural_key, write_text_atomic
from fmc.core.normalization import volume_stats
from fmc.core.studies import parse_content
from fmc.evaluation.metrics import (
    DEFAULT_BLOCK_Y,
    DEFAULT_SLAB_Z,
    GaussianFilteredVolume,
    n_ssim_from,
    psnr,
    ssim_against,
)
from fmc.evaluation.segmentation import DEFAULT_MAX_VOXELS, IouReference, Segmenter, n_iou_from
from fmc.io.tiff import TiffVolume

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
_PAIR_NAME = re.compile(r"^(?P<stem>.+)_(?P<kind>angle|fused)\.(?:tif|tiff)$", re.IGNORECASE)
PER_IMAGE_COLUMNS = ["file", "study", "content", "ssim_input", "ssim_pred", "n_ssim", "psnr_pred",
                     "method", "status"]
SUMMARY_COLUMNS = ["content", "study", "method", "n_images", "n_scored", "n_missing",
                   "mean_n_ssim", "mean_ssim_input", "mean_ssim_pred", "mean_psnr_pred"]


@dataclass(frozen=True)
class RawPair:
    """One single view and its fused ground truth."""

    angle: Path
    fused: Path

    @property
    def name(self) -> str:
        """The angle file's name, which a prediction keeps."""
        return self.angle.name


@dataclass(frozen=True)
class Method:
    """What is scored against the ground truth: prediction files or a baseline.

    Attributes
    ----------
    kind : {'prediction', 'identity', 'gaussian'}
    label : str
        Name in tables, e.g. ``gaussian(sigma=0.5)``.
    sigma_zyx : tuple of 3 floats, optional
        Gaussian σ in voxels (gaussian only).
    folder : Path, optional
        Prediction folder (prediction only).
    """

    kind: str
    label: str
    sigma_zyx: tuple[float, float, float] | None = None
    folder: Path | None = None


@dataclass
class ImageScore:
    """One row of ``per_image.csv``."""

    file: str
    study: int | None
    content: str | None
    ssim_input: float = math.nan
    ssim_pred: float = math.nan
    n_ssim: float = math.nan
    psnr_pred: float = math.nan
    method: str = ""
    status: str = "ok"
    # Segmentation scores (fmc.evaluation.segmentation), NaN unless evaluate's iou option is on. Not the
    # challenge's N_IoU: the tables name them after their backend (n_iou_proxy, ...).
    iou_input: float = math.nan
    iou_pred: float = math.nan
    n_iou: float = math.nan


@dataclass
class EvaluationResult:
    """Per-image rows and the summary of an evaluation.

    ``iou_backend`` names the segmentation backend of the IoU columns (``proxy``,
    ``cellpose``), or is None when they were not computed.
    """

    rows: list[ImageScore] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    iou_backend: str | None = None


def find_pairs(raw_dir: str | Path) -> list[RawPair]:
    """Match ``*_angle.tif`` with ``*_fused.tif`` files in ``raw_dir``, sorted by image index.

    Angle files without a fused partner are logged and skipped (they cannot be scored).

    Raises
    ------
    FmcInputError
        If the folder does not exist or holds no complete pair.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FmcInputError(f"{raw_dir}: raw folder does not exist")
    by_stem: dict[str, dict[str, Path]] = {}
    for path in raw_dir.iterdir():
        match = _PAIR_NAME.match(path.name)
        if match and path.is_file():
            by_stem.setdefault(match["stem"], {})[match["kind"].lower()] = path
    pairs, lonely = [], []
    for files in by_stem.values():
        if "angle" in files and "fused" in files:
            pairs.append(RawPair(files["angle"], files["fused"]))
        else:
            lonely.append(next(iter(files.values())).name)
    if lonely:
        log.warning("%d file(s) without a partner are not scored: %s", len(lonely),
                    ", ".join(sorted(lonely)[:5]) + (" ..." if len(lonely) > 5 else ""))
    if not pairs:
        raise FmcInputError(f"{raw_dir}: no image_<i>_<content>_angle.tif / _fused.tif pair found")
    return sorted(pairs, key=lambda p: natural_key(p.name))


def restrict_to_list(pairs: Sequence[RawPair], list_path: str | Path) -> list[RawPair]:
    """The pairs whose image is listed in a split list (``angle.h5;fused.h5`` rows).

    Raises
    ------
    FmcInputError
        If the list is missing, or names an image that has no raw pair.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FmcInputError(f"split_list={list_path}: no such file")
    wanted = []
    for line in list_path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            angle = re.split(r"[;,]", line)[0].strip()
            wanted.append(Path(angle).name.rsplit(".", 1)[0])
    by_stem = {pair.name.rsplit(".", 1)[0]: pair for pair in pairs}
    unknown = [stem for stem in wanted if stem not in by_stem and stem.lower() != "angle"]
    if unknown:
        raise FmcInputError(f"{list_path}: {len(unknown)} listed image(s) have no raw pair, e.g. "
                            f"{unknown[0]}")
    return [by_stem[stem] for stem in wanted if stem in by_stem]


def prediction_path(folder: Path, pair: RawPair) -> Path | None:
    """The prediction for ``pair`` in ``folder`` (same name as the angle file, .tif or .tiff)."""
    stem = pair.angle.name.rsplit(".", 1)[0]
    for suffix in (pair.angle.suffix, *TIFF_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def parse_sigma(value: object) -> tuple[float, float, float]:
    """σ in voxels from a scalar or a ``[z, y, x]`` list.

    Raises
    ------
    FmcConfigError
        If ``value`` is not one positive number or three of them.
    """
    try:
        numbers = [float(v) for v in (value if isinstance(value, (list, tuple)) else
                                      list(value) if hasattr(value, "__iter__")
                                      and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3 or not all(np.isfinite(numbers)) or min(numbers) < 0:
        raise FmcConfigError(f"sigma={value!r}: give one non-negative number of voxels, "
                             "[z,y,x], or sigma=sweep")
    return (numbers[0], numbers[1], numbers[2])


def gaussian_label(sigma_zyx: Sequence[float]) -> str:
    """Table label of a Gaussian baseline."""
    if len(set(sigma_zyx)) == 1:
        return f"gaussian(sigma={sigma_zyx[0]:g})"
    return "gaussian(sigma=[" + ",".join(f"{s:g}" for s in sigma_zyx) + "])"


def check_predictions(pairs: Sequence[RawPair], methods: Sequence[Method]) -> None:
    """Fail before any scoring if a prediction's shape differs from its ground truth's."""
    for method in methods:
        if method.folder is None:
            continue
        for pair in pairs:
            path = prediction_path(method.folder, pair)
            if path is None:
                continue
            with TiffVolume(pair.fused) as fused, TiffVolume(path) as prediction:
                if prediction.shape != fused.shape:
                    raise FmcInputError(
                        f"{path}: prediction shape {prediction.shape} differs from the ground "
                        f"truth's {fused.shape} ({pair.fused}); predictions must keep the input's "
                        "shape")


def score_pair(pair: RawPair, methods: Sequence[Method], slab: int = DEFAULT_SLAB_Z,
               block_y: int = DEFAULT_BLOCK_Y, iou_backend: Segmenter | None = None,
               iou_max_voxels: int | None = DEFAULT_MAX_VOXELS) -> list[ImageScore]:
    """Score every method on one pair, reading the ground truth once.

    Returns one :class:`ImageScore` per method; a missing prediction file gives a row with
    ``status='missing'`` and NaN scores. With ``iou_backend`` (see :mod:`fmc.evaluation.segmentation`) the
    rows also get ``iou_input``, ``iou_pred`` and ``n_iou``, on isotropic grids of at most
    ``iou_max_voxels``; without it nothing is segmented.
    """
    with TiffVolume(pair.angle) as view, TiffVolume(pair.fused) as fused:
        if view.shape != fused.shape:
            raise FmcInputError(f"{pair.angle}: shape {view.shape} differs from its fused "
                                f"partner's {fused.shape} ({pair.fused.name})")
        study = fused.meta.study if fused.meta.study is not None else view.meta.study
        content = fused.meta.content or view.meta.content or _content_from_name(pair.name)
        rows = [ImageScore(pair.name, study, content, method=m.label) for m in methods]
        opened: list[TiffVolume] = []
        try:
            candidates, candidate_rows, present = [], [], []
            for method, row in zip(methods, rows, strict=True):
                volume = _method_volume(method, pair, view, opened)
                if volume is None:
                    row.status = "missing"
                    continue
                present.append((method, row, volume))
                if method.kind != "identity":
                    candidates.append(volume)
                    candidate_rows.append(row)
            fused_stats = volume_stats(fused, name=str(pair.fused))
            view_stats = volume_stats(view, name=str(pair.angle))
            candidate_stats = [volume_stats(v, name=_name_of(v, pair)) for v in candidates]
            ssims = ssim_against(fused, [view, *candidates], target_stats=fused_stats,
                                 prediction_stats=[view_stats, *candidate_stats],
                                 names=[str(pair.fused), str(pair.angle),
                                        *[_name_of(v, pair) for v in candidates]],
                                 slab=slab, block_y=block_y)
            ssim_input = ssims[0]
            psnr_input = psnr(view, fused, target_stats=fused_stats, prediction_stats=view_stats)
            for row in rows:
                row.ssim_input = ssim_input
            for row, method in zip(rows, methods, strict=True):
                if method.kind == "identity":
                    row.ssim_pred, row.n_ssim, row.psnr_pred = ssim_input, 0.0, psnr_input
            for row, volume, stats, value in zip(candidate_rows, candidates, candidate_stats,
                                                 ssims[1:], strict=True):
                row.ssim_pred = value
                row.n_ssim = n_ssim_from(value, ssim_input)
                row.psnr_pred = psnr(volume, fused, target_stats=fused_stats,
                                     prediction_stats=stats)
                if math.isnan(row.n_ssim):
                    row.status = "undefined (input equals ground truth)"
            if iou_backend is not None and present:
                _score_iou(pair, view, fused, content, present, iou_backend, iou_max_voxels)
        finally:
            for volume in opened:
                volume.close()
    return rows


def _score_iou(pair: RawPair, view: TiffVolume, fused: TiffVolume, content: str | None,
               present: Sequence[tuple[Method, ImageScore, object]], backend: Segmenter,
               max_voxels: int | None) -> None:
    """Fill the IoU fields of ``present``'s rows (the ground truth and input segmented once)."""
    if content not in ("nucleus", "membrane"):
        log.warning("%s: content unknown (not in the metadata nor the name): no IoU", pair.name)
        return
    spacing = fused.meta.spacing_zyx or view.meta.spacing_zyx
    if spacing is None:
        log.warning("%s: no voxel size in the metadata; segmenting as if voxels were isotropic",
                    pair.name)
        spacing = (1.0, 1.0, 1.0)
    reference = IouReference(fused, view, spacing, content, backend, max_voxels)
    for method, row, volume in present:
        # The identity baseline is the input, already segmented by the reference.
        iou_pred = reference.iou_input if method.kind == "identity" else \
            reference.score(volume).iou_pred
        row.iou_input, row.iou_pred = reference.iou_input, iou_pred
        row.n_iou = n_iou_from(iou_pred, reference.iou_input)


def _name_of(volume: object, pair: RawPair) -> str:
    return str(getattr(volume, "path", f"{pair.name} (baseline)"))


def _content_from_name(name: str) -> str | None:
    match = re.search(r"_(nucleus|nuclei|membrane)_", name, flags=re.IGNORECASE)
    return parse_content(match.group(1)) if match else None


def _method_volume(method: Method, pair: RawPair, view: TiffVolume, opened: list[TiffVolume]):
    if method.kind == "identity":
        return view
    if method.kind == "gaussian":
        return GaussianFilteredVolume(view, method.sigma_zyx)
    path = prediction_path(method.folder, pair)
    if path is None:
        return None
    volume = TiffVolume(path)
    opened.append(volume)
    return volume


def summarize(rows: Iterable[ImageScore]) -> list[dict]:
    """Mean scores per content (the leaderboard columns) and per study × content, per method.

    Missing predictions are counted in ``n_missing`` and excluded from the means, which cover
    ``n_scored`` images.
    """
    groups: dict[tuple, list[ImageScore]] = {}
    for row in rows:
        groups.setdefault((row.method, row.content or "unknown", "all"), []).append(row)
        study = "unknown" if row.study is None else str(row.study)
        groups.setdefault((row.method, row.content or "unknown", study), []).append(row)
    summary = []
    for (method, content, study), members in groups.items():
        scored = [r for r in members if r.status == "ok"]

        def mean(attribute: str, rows_: list[ImageScore] = scored) -> float:
            values = [getattr(r, attribute) for r in rows_ if np.isfinite(getattr(r, attribute))]
            return float(np.mean(values)) if values else math.nan

        summary.append({
            "content": content, "study": study, "method": method, "n_images": len(members),
            "n_scored": len(scored), "n_missing": sum(r.status == "missing" for r in members),
            "mean_n_ssim": mean("n_ssim"), "mean_ssim_input": mean("ssim_input"),
            "mean_ssim_pred": mean("ssim_pred"), "mean_psnr_pred": mean("psnr_pred"),
            "mean_n_iou": mean("n_iou"), "mean_iou_input": mean("iou_input"),
            "mean_iou_pred": mean("iou_pred")})
    method_order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in summary))}
    summary.sort(key=lambda r: (method_order[r["method"]], r["content"], r["study"] != "all",
                                natural_key(r["study"])))
    return summary


def best_per_content(summary: Sequence[dict]) -> list[dict]:
    """For each content, the method with the highest mean N_SSIM over all its images."""
    best: dict[str, dict] = {}
    for row in summary:
        if row["study"] != "all" or not np.isfinite(row["mean_n_ssim"]):
            continue
        if row["content"] not in best or row["mean_n_ssim"] > best[row["content"]]["mean_n_ssim"]:
            best[row["content"]] = row
    return [best[c] for c in sorted(best)]


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in row.items()})
    return buffer.getvalue()


def _format(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return "" if value is None else value


def iou_columns(backend: str | None, summary: bool = False) -> dict[str, str]:
    """Field → CSV header of the IoU columns, suffixed with the backend (empty if None).

    The suffix (``n_iou_proxy``, ``mean_n_iou_cellpose``) keeps these numbers from being read
    as the challenge's N_IoU, which needs the organisers' verified segmentations.
    """
    if backend is None:
        return {}
    fields = ("mean_n_iou", "mean_iou_input", "mean_iou_pred") if summary else \
        ("iou_input", "iou_pred", "n_iou")
    return {name: f"{name}_{backend}" for name in fields}


def _renamed(rows: Iterable[dict], names: dict[str, str]) -> list[dict]:
    return [{names.get(k, k): v for k, v in row.items()} for row in rows]


def write_tables(out_dir: str | Path, result: EvaluationResult) -> tuple[Path, Path]:
    """Write ``per_image.csv`` and ``summary.csv`` into ``out_dir`` (each atomically).

    The IoU columns (see :func:`iou_columns`) are appended only when ``result.iou_backend`` is
    set, so that the default tables keep their columns.
    """
    out_dir = Path(out_dir)
    row_names = iou_columns(result.iou_backend)
    summary_names = iou_columns(result.iou_backend, summary=True)
    per_image = write_text_atomic(out_dir / "per_image.csv", _csv_text(
        _renamed([asdict(r) for r in result.rows], row_names),
        [*PER_IMAGE_COLUMNS, *row_names.values()]))
    summary = write_text_atomic(out_dir / "summary.csv", _csv_text(
        _renamed(result.summary, summary_names), [*SUMMARY_COLUMNS, *summary_names.values()]))
    return per_image, summary


def format_table(summary: Sequence[dict], iou_backend: str | None = None) -> str:
    """The summary as an aligned text table (mean N_SSIM per content first).

    With ``iou_backend``, a last column ``N_IoU(<backend>)`` holds the mean segmentation score.
    """
    header = ["content", "study", "method", "images", "N_SSIM", "SSIM(input)", "SSIM(pred)",
              "PSNR"]
    if iou_backend is not None:
        header.append(f"N_IoU({iou_backend})")
    lines = []
    for row in summary:
        n = f"{row['n_scored']}/{row['n_images']}"
        if row["n_missing"]:
            n += f" ({row['n_missing']} missing)"
        lines.append([row["content"], row["study"], row["method"], n,
                      *(f"{row[k]:+.4f}" if k == "mean_n_ssim" and np.isfinite(row[k]) else
                        f"{row[k]:.4f}" if np.isfinite(row[k]) else "-"
                        for k in ("mean_n_ssim", "mean_ssim_input", "mean_ssim_pred")),
                      f"{row['mean_psnr_pred']:.2f}" if np.isfinite(row["mean_psnr_pred"]) else "-"])
        if iou_backend is not None:
            value = row.get("mean_n_iou", math.nan)
            lines[-1].append(f"{value:+.4f}" if np.isfinite(value) else "-")
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]
    render = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
              for line in [header, *lines]]
    render.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(render)
