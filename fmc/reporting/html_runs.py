"""One run's section of ``report.html``: links to its files, its montage, its whole-volume
validation image and its per-volume test table.

What each part reads from the run folder (any of them may be missing; the section says so or
leaves the part out):

* the montage of its first test image (or the first of ``montage_images`` it predicted):
  :func:`fmc.evaluation.montage.montage_array` of ``test_predictions/<image>`` beside the raw
  input and target, as ``report_montage.png`` draws it;
* ``validation_images/step<N>.png``, written during training: the image of the best step in
  ``volume_validation.json`` (the last entry with ``"best": true``), else the newest;
* ``test_volumes.csv``: one row per test volume (file, study, content, n_ssim and the
  baselines' scores).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from fmc.core.errors import FmcInputError
from fmc.core.files import natural_key
from fmc.core.naming import METRICS_FILE
from fmc.reporting.html_parts import (
    Cell,
    Column,
    esc,
    image_tag,
    number_value,
    png_bytes,
    relative_href,
    score_cell,
    sortable_table,
)
from fmc.reporting.runs import SCORES_DIR, RunReport

log = logging.getLogger("fmc.report")

VALIDATION_IMAGES = "validation_images"
# fmc.training.volume_validation.HISTORY_FILE (not imported: that module loads Lightning).
VALIDATION_HISTORY = "volume_validation.json"
TEST_VOLUMES = "test_volumes.csv"
_SCORE_COLUMNS = ("n_ssim", "identity_n_ssim", "gaussian_n_ssim")
_STEP = re.compile(r"(\d+)")


def _step(path: Path) -> int | None:
    match = _STEP.search(path.stem)
    return int(match.group(1)) if match else None


def best_validation_step(run: Path) -> int | None:
    """The best step of ``<run>/volume_validation.json`` (last entry marked best), or None."""
    path = run / VALIDATION_HISTORY
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    best = [h.get("step") for h in history if isinstance(h, dict) and h.get("best")] \
        if isinstance(history, list) else []
    return int(best[-1]) if best and isinstance(best[-1], (int, float)) else None


def validation_image(run: Path) -> tuple[Path, str] | None:
    """The validation image to show and why it was chosen, or None without any."""
    folder = run / VALIDATION_IMAGES
    images = sorted(folder.glob("*.png"), key=lambda p: natural_key(p.name)) \
        if folder.is_dir() else []
    if not images:
        return None
    best = best_validation_step(run)
    chosen = [p for p in images if best is not None and _step(p) == best]
    if chosen:
        return chosen[0], f"the best step ({best}, `{VALIDATION_HISTORY}`)"
    newest = max(images, key=lambda p: (_step(p) is not None, _step(p) or 0,
                                         natural_key(p.name)))
    return newest, f"the newest of {len(images)}"


def read_test_volumes(run: Path) -> tuple[list[str], list[dict[str, str]]] | None:
    """``<run>/test_volumes.csv`` as (columns, rows), or None when absent or unreadable."""
    path = run / TEST_VOLUMES
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        log.warning("report.html: %s not readable (%s)", path, error)
        return None
    return columns, rows


def _is_number(text: str | None) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def per_volume_table(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    """The per-volume test table: N_SSIM scores signed, other columns of numbers with 4
    significant digits (both sorted as numbers), the rest as text."""
    numeric = {c for c in columns if c in _SCORE_COLUMNS or any(row.get(c) for row in rows)
               and all(_is_number(row.get(c)) for row in rows if row.get(c))}
    shown = [Column(c, c.replace("_", " "), numeric=c in numeric) for c in columns]

    def cell(column: Column, text: str | None) -> Cell:
        if column.key in _SCORE_COLUMNS:
            return score_cell(text)
        if column.numeric:
            value = number_value(text)
            return Cell(f"{float(value):.4g}" if value else "-", value)
        return Cell(esc(text or "-"), text or "")

    return sortable_table(shown, [[cell(c, row.get(c.key)) for c in shown] for row in rows],
                          fit=True)


def _montage(run: RunReport, panel_px: int, images: Sequence[str] | None) -> str:
    from fmc.evaluation.montage import montage_array
    from fmc.reporting.figures import run_montage_image

    wanted = [n for n in (list(images or []) + [run.first_test_image]) if n]
    for name in wanted:
        image, missing = run_montage_image(run, name)
        if image is None:
            if "prediction" not in missing:
                return (f'<p class="note">No montage: {esc(name)} has no '
                        f'{esc(" or ".join(missing))} file (input=).</p>')
            continue
        try:
            array = montage_array([image], panel_px=panel_px)
        except (FmcInputError, OSError, ValueError) as error:
            log.warning("report.html: montage of run %s not drawn (%s)", run.name, error)
            return f'<p class="note">Montage not drawn: {esc(error)}</p>'
        return image_tag(png_bytes(array), f"montage of run {run.name}",
                         f"Test volume `{name}`: XY and XZ max projections, input | prediction | "
                         "target | |prediction - target|.")
    return '<p class="note">No montage: the run has no test prediction (test_predictions/).</p>'


def _links(run: RunReport, page_folder: Path) -> str:
    links = [f'<a href="{relative_href(run.folder, page_folder, folder=True)}">run folder</a>']
    for relative, title in ((".hydra/config.yaml", "config"), (METRICS_FILE, METRICS_FILE),
                            (f"{SCORES_DIR}/summary.csv", "test scores"),
                            (TEST_VOLUMES, TEST_VOLUMES)):
        if (run.folder / relative).is_file():
            links.append(f'<a href="{relative_href(run.folder / relative, page_folder)}">'
                         f"{esc(title)}</a>")
    return f'<p class="links">{"".join(links)}</p>'


def run_section(run: RunReport, anchor: str, page_folder: Path, montage: bool = True,
                panel_px: int = 192, images: Sequence[str] | None = None) -> str:
    """The ``<section>`` of one run (``anchor``: its element id, linked from the runs table)."""
    badge = "" if run.status == "ok" else \
        f'<span class="badge warn">{esc(run.status.split(":")[0])}</span>'
    facts = " · ".join(esc(x) for x in (
        f"study {run.study}" if run.study else "", run.content, run.channels, run.loss,
        run.varied, run.checkpoint.name if run.checkpoint else "") if x)
    parts = [f'<section class="run" id="{esc(anchor)}">',
             f'<h3>run {esc(run.name)} <span class="muted">{esc(run.run_name)}</span>{badge}</h3>',
             f'<p class="muted">{facts}</p>' if facts else "",
             f'<p class="note">{esc(run.status)}</p>' if run.status != "ok" else "",
             _links(run, page_folder), '<div class="images">']
    if montage:
        parts.append(_montage(run, panel_px, images))
    validation = validation_image(run.folder)
    if validation is not None:
        path, why = validation
        step = _step(path)
        caption = (f"Whole-volume validation at step {step}" if step is not None else
                   f"Whole-volume validation `{path.name}`") + f": {why}."
        parts.append(image_tag(path.read_bytes(), f"validation image of run {run.name}", caption))
    parts.append("</div>")
    volumes = read_test_volumes(run.folder)
    if volumes is not None:
        parts += [f"<p>Test volumes (<code>{TEST_VOLUMES}</code>):</p>",
                  per_volume_table(*volumes)]
    parts.append("</section>")
    return "\n".join(p for p in parts if p)
