"""The leave-one-study-out table: how models do on studies they never saw.

A run trained with ``holdout=K`` (:mod:`fmc.train`) tested itself on all of study K's volumes
and wrote their challenge N_SSIM into ``metrics.json`` (``test/volumes``). This module gathers
such runs into one table per content -- per held-out study the mean and the worst volume, then
over all held-out studies -- and a bar chart; :mod:`fmc.report` adds both to its report when a
sweep holds such runs. "Do no harm": a volume below ``HARM_LIMIT`` is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fmc.reporting.runs import RunReport

# A held-out volume scoring below this is "harmed": the output is worse than the input.
HARM_LIMIT = -0.02


@dataclass(frozen=True)
class HeldOutScores:
    """One held-out study's test volumes, scored by one run."""

    content: str
    holdout: int
    run: str
    volumes: dict[str, float]

    @property
    def mean(self) -> float:
        values = [v for v in self.volumes.values() if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def worst(self) -> float:
        values = [v for v in self.volumes.values() if math.isfinite(v)]
        return float(np.min(values)) if values else math.nan


def held_out_scores(run: str, metrics: Mapping[str, Any] | None) -> HeldOutScores | None:
    """The held-out scores in a run's ``metrics.json`` (None for a run without ``holdout``)."""
    metrics = metrics or {}
    holdout = metrics.get("holdout")
    if holdout is None or str(holdout).lower() in ("none", "null", ""):
        return None
    volumes = {str(k): float(v) for k, v in (metrics.get("test/volumes") or {}).items()
               if v is not None}
    return HeldOutScores(str(metrics.get("content", "")), int(holdout), run, volumes)


def loso_rows(scores: Sequence[HeldOutScores]) -> list[dict[str, Any]]:
    """Table rows: one per (content, held-out study), then an ``all`` row per content.

    Several runs of one held-out study (seeds) pool their volumes.
    """
    rows = []
    for content in sorted({s.content for s in scores}):
        pooled: dict[int, list[float]] = {}
        runs: dict[int, list[str]] = {}
        for item in scores:
            if item.content == content:
                pooled.setdefault(item.holdout, []).extend(
                    v for v in item.volumes.values() if math.isfinite(v))
                runs.setdefault(item.holdout, []).append(item.run)
        for study in sorted(pooled):
            rows.append(_row(content, str(study), pooled[study], runs[study]))
        everything = [v for values in pooled.values() for v in values]
        means = [float(np.mean(v)) for v in pooled.values() if v]
        overall = _row(content, "all", everything, [])
        overall["runs"] = f"{sum(len(r) for r in runs.values())} runs"
        # The overall mean weighs every held-out study alike, whatever its number of volumes.
        overall["mean"] = float(np.mean(means)) if means else math.nan
        rows.append(overall)
    return rows


def _row(content: str, study: str, values: Sequence[float], runs: Sequence[str]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {"content": content, "held_out": study, "volumes": len(finite),
            "mean": float(np.mean(finite)) if finite else math.nan,
            "worst": float(np.min(finite)) if finite else math.nan,
            "harmed": sum(v < HARM_LIMIT for v in finite), "runs": ", ".join(runs)}


def loso_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a markdown table (N_SSIM with sign, 4 decimals)."""
    lines = ["| content | held-out study | volumes | mean N_SSIM | worst volume | "
             f"volumes < {HARM_LIMIT} | runs |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        study = "**all**" if row["held_out"] == "all" else row["held_out"]
        lines.append(f"| {row['content']} | {study} | {row['volumes']} | {row['mean']:+.4f} | "
                     f"{row['worst']:+.4f} | {row['harmed']} | {row['runs']} |")
    return "\n".join(lines)


def write_loso_figure(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Bar chart of the rows: mean and worst volume per held-out study and content."""
    from fmc.reporting.bar_chart import Bar, write_bar_chart

    bars = [Bar(f"{row['content']}\nheld out {row['held_out']}", row["mean"], row["worst"])
            for row in rows]
    return write_bar_chart(bars, path, legend=("mean", "worst volume"),
                           title="Leave one study out: N_SSIM on the unseen study; identity = 0")


def loso_section(reports: Sequence[RunReport], out: Path
                 ) -> tuple[str, Path, list[dict[str, Any]]] | None:
    """The leave-one-study-out table (Markdown), figure and rows (:func:`loso_rows`) of the runs
    trained with ``holdout``."""
    scores = [s for s in (held_out_scores(r.name, r.metrics) for r in reports) if s is not None]
    if not scores:
        return None
    rows = loso_rows(scores)
    return loso_markdown(rows), write_loso_figure(rows, out / "report_loso.png"), rows
