"""Scoring folders of volumes with the challenge metric: the scores per image, summaries, tables.

Used by ``python -m fmc.evaluate`` and importable without Hydra. The pairs and methods scored come
from :mod:`fmc.evaluation.pairs`.
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

from fmc.core.errors import FmcInputError
from fmc.core.files import natural_key, write_text_atomic
from fmc.core.normalization import volume_stats
from fmc.core.studies import parse_content
from fmc.evaluation.iou import IouReference, n_iou_from
from fmc.evaluation.isotropic import DEFAULT_MAX_VOXELS
from fmc.evaluation.metrics import (
    DEFAULT_BLOCK_Y,
    DEFAULT_SLAB_Z,
    GaussianFilteredVolume,
    n_ssim_from,
    psnr,
    ssim_against,
)
from fmc.evaluation.pairs import Method, RawPair, prediction_path
from fmc.evaluation.segmentation import Segmenter
from fmc.io.tiff import TiffVolume
from fmc.io.zarr_volume import open_lazy

log = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = ["file", "study", "content", "ssim_input", "ssim_pred", "n_ssim", "psnr_pred",
                     "method", "status"]
SUMMARY_COLUMNS = ["content", "study", "method", "n_images", "n_scored", "n_missing",
                   "mean_n_ssim", "mean_ssim_input", "mean_ssim_pred", "mean_psnr_pred"]


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
    # Segmentation scores (fmc.evaluation.iou), NaN unless evaluate's iou option is on. Not the
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


def score_pair(pair: RawPair, methods: Sequence[Method], slab: int = DEFAULT_SLAB_Z,
               block_y: int = DEFAULT_BLOCK_Y, iou_backend: Segmenter | None = None,
               iou_max_voxels: int | None = DEFAULT_MAX_VOXELS) -> list[ImageScore]:
    """Score every method on one pair, reading the ground truth once.

    Returns one :class:`ImageScore` per method; a missing prediction file gives a row with
    ``status='missing'`` and NaN scores. With ``iou_backend`` (see :mod:`fmc.evaluation.segmentation`) the
    rows also get ``iou_input``, ``iou_pred`` and ``n_iou``, on isotropic grids of at most
    ``iou_max_voxels``; without it nothing is segmented.
    """
    with open_lazy(pair.angle) as view, open_lazy(pair.fused) as fused:
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
    volume = open_lazy(path)
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
