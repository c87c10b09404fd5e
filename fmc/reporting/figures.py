"""The report's figures: the N_SSIM bar chart (model vs best Gaussian per run) and the montage.

The drawing itself is :mod:`fmc.evaluation.montage`'s and :mod:`fmc.reporting.bar_chart`'s; this
module picks what each figure shows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from fmc.core.naming import ANGLE, file_kind, is_tiff, partner_name
from fmc.reporting.runs import PREDICTIONS_DIR, RunReport

log = logging.getLogger("fmc.report")


def run_montage_image(run: RunReport, name: str):
    """The :class:`fmc.evaluation.montage.MontageImage` of the run's test image ``name``, and the
    files missing for it (``{}`` when it can be drawn; the image is None then only if
    ``prediction`` is missing too)."""
    from fmc.evaluation.montage import MontageImage

    name = name if is_tiff(name) else f"{name}.tif"
    target = partner_name(name) if file_kind(name) == ANGLE else None
    files = {"prediction": run.folder / PREDICTIONS_DIR / name,
             "input": run.raw / name if run.raw is not None else None,
             "target": run.raw / target if run.raw and target else None}
    missing = {k: p for k, p in files.items() if p is None or not p.is_file()}
    if missing:
        return None, missing
    return MontageImage(f"run {run.name}: {name}", files["input"], files["prediction"],
                        files["target"]), {}


def montage_choices(runs: Sequence[RunReport], images: Sequence[str] | None, limit: int) -> list:
    """The :class:`fmc.evaluation.montage.MontageImage` list: ``images`` (file names) for every run that
    predicted them, or each run's first test image; at most ``limit``. Images whose
    prediction, input or target file is missing are skipped (logged).
    """
    chosen = []
    for run in runs:
        wanted = list(images) if images else [run.first_test_image] if run.first_test_image else []
        for name in wanted:
            image, missing = run_montage_image(run, name)
            if image is None:
                if not images or "prediction" not in missing:
                    log.warning("montage: %s %s skipped, no %s file (%s)", run.name, name,
                                " or ".join(missing), ", ".join(str(p) for p in missing.values()))
                continue
            chosen.append(image)
    if len(chosen) > limit:
        log.info("montage: showing %d of %d images (montage_max_images=%d)", limit, len(chosen),
                 limit)
    return chosen[:limit]


def write_figures(runs: Sequence[RunReport], out: Path, montage: bool = True,
                  images: Sequence[str] | None = None, max_images: int = 4,
                  panel_px: int = 192) -> list[Path]:
    """Write ``report_nssim.png`` (runs with test scores) and ``report_montage.png``."""
    from fmc.evaluation.montage import write_montage
    from fmc.reporting.bar_chart import Bar, write_bar_chart

    written = []
    bars = [Bar(f"{r.name}\n{_short(r)}", r.scores.model, r.scores.gaussian) for r in runs
            if r.scores is not None and (math.isfinite(r.scores.model)
                                         or math.isfinite(r.scores.gaussian))]
    if bars:
        written.append(write_bar_chart(bars, out / "report_nssim.png"))
    else:
        log.warning("no run has test scores: report_nssim.png not written")
    if montage:
        chosen = montage_choices(runs, images, max_images)
        if chosen:
            written.append(write_montage(chosen, out / "report_montage.png", panel_px=panel_px))
        else:
            log.warning("no test prediction to show: report_montage.png not written (predictions "
                        "go to <run>/%s; input and target are read from input=)", PREDICTIONS_DIR)
    return written


def _short(run: RunReport) -> str:
    study = run.study if run.study in ("", "all") else f"S{run.study}"
    return " ".join(x for x in (study, run.content) if x)
