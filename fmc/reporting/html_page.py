"""``report.html``: the report as one self-contained page (no network, no other file needed).

It holds, in order: a title naming the sweep(s) and the date it was generated; what the columns
mean (the bullets of ``report.md``); the runs table -- the printed table's columns, a ``sweep``
column first when several sweeps are compared -- sortable by a click on a header
(:data:`fmc.reporting.html_parts.SORTER`; ``report.html#sort=test_n_ssim:desc`` opens it
sorted); the leave-one-study-out table where there is one; the figures (``report_nssim.png``,
``report_montage.png``, ``report_loso.png``) embedded as ``data:`` URIs; and a section per run
(:func:`fmc.reporting.html_runs.run_section`) with relative links to its folder and config.
Every string read from a file is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fmc.core.files import write_text_atomic
from fmc.reporting.html_parts import (
    SORTER,
    STYLE,
    Cell,
    Column,
    esc,
    image_tag,
    inline_markdown,
    number_value,
    score_cell,
    sortable_table,
)
from fmc.reporting.html_runs import run_section
from fmc.reporting.runs import RunReport
from fmc.reporting.tables import column_notes, display_row, shown_columns

# Columns sorted as numbers, and the row value each sorts by.
_NUMBERS = {"val_n_ssim": "val_n_ssim", "test_n_ssim": "test_n_ssim",
            "test_worst_n_ssim": "test_worst_n_ssim", "identity_n_ssim": "identity_n_ssim",
            "gaussian": "gaussian_n_ssim", "model_minus_gaussian": "model_minus_gaussian",
            "n_test": "n_test", "global_step": "global_step"}
_SCORES = {"test_n_ssim", "test_worst_n_ssim", "identity_n_ssim", "model_minus_gaussian"}
_WRAPPED = {"varied": "wrap small", "checkpoint_name": "wrap small ckpt", "status": "wrap small",
            "channels": "wrap"}
_CAPTIONS = {"report_nssim": "Test N_SSIM per run on whole volumes: model beside the best "
                             "Gaussian baseline (identity = 0).",
             "report_montage": "XY and XZ max projections of test volumes: input | prediction | "
                               "target | |prediction - target| (XZ stretched by the voxel size).",
             "report_loso": "Leave one study out: mean and worst volume per held-out study."}


def run_anchor(index: int) -> str:
    """The element id of the ``index``-th run's section."""
    return f"run-{index}"


def runs_table(reports: Sequence[RunReport], rows: Sequence[Mapping[str, Any]]) -> str:
    """The sortable runs table (``id="runs"``; each ``<tr>`` carries ``data-run``, the run's
    name)."""
    columns = [Column(key, title, numeric=key in _NUMBERS, css=_WRAPPED.get(key, ""))
               for key, title in shown_columns(rows)]
    body = []
    for index, row in enumerate(rows):
        shown = display_row(dict(row))
        cells = []
        for column in columns:
            key = column.key
            if key == "run":
                cells.append(Cell(f'<a href="#{run_anchor(index)}">{esc(shown[key])}</a>',
                                  str(row["run"])))
            elif key in _SCORES:
                cell = score_cell(row[_NUMBERS[key]])
                cells.append(Cell(esc(shown[key]), cell.value, cell.css))
            elif key in ("gaussian", "val_n_ssim"):  # the score, then (sigma) or (patch)
                cell = score_cell(row[_NUMBERS[key]])
                note = shown[key][len(cell.content):].strip()
                note = f' <span class="muted nw">{esc(note)}</span>' if note else ""
                cells.append(Cell(f'<span class="nw">{cell.content}</span>{note}', cell.value,
                                  f"split {cell.css}".strip()))
            elif key == "status":  # the kind shown, the reason on hover (and in the run's section)
                status = str(row["status"])
                cells.append(Cell(f'<span title="{esc(status)}">{esc(status.split(":")[0])}</span>',
                                  status))
            elif column.numeric:
                cells.append(Cell(esc(shown[key]), number_value(row.get(_NUMBERS[key]))))
            else:
                text = shown[key]
                cells.append(Cell(esc(text), "" if text == "-" else text))
        body.append(cells)
    attributes = [{"data-run": r.name} for r in reports]
    return sortable_table(columns, body, table_id="runs", row_attributes=attributes)


def loso_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leave-one-study-out rows (:func:`fmc.reporting.loso.loso_rows`) as a sortable table."""
    from fmc.reporting.loso import HARM_LIMIT

    columns = [Column("content", "content"), Column("held_out", "held-out study"),
               Column("volumes", "volumes", True), Column("mean", "mean N_SSIM", True),
               Column("worst", "worst volume", True),
               Column("harmed", f"volumes < {HARM_LIMIT}", True), Column("runs", "runs", css="wrap")]
    cells = [[Cell(esc(r["content"])), Cell(esc(r["held_out"])),
              Cell(esc(r["volumes"]), number_value(r["volumes"])), score_cell(r["mean"]),
              score_cell(r["worst"]), Cell(esc(r["harmed"]), number_value(r["harmed"])),
              Cell(esc(r["runs"]))] for r in rows]
    return sortable_table(columns, cells, fit=True)


def page_title(sweeps: Sequence[str], n_runs: int) -> str:
    """``Training report: sweep X`` / ``sweeps X, Y`` / ``N run folders``."""
    if not sweeps:
        return f"Training report: {n_runs} run folder(s)"
    return "Training report: " + ("sweep " if len(sweeps) == 1 else "sweeps ") + ", ".join(sweeps)


def render_page(reports: Sequence[RunReport], rows: Sequence[Mapping[str, Any]], out: Path,
                sweeps: Sequence[tuple[str, Path]] = (), figures: Sequence[Path] = (),
                loso_rows: Sequence[Mapping[str, Any]] | None = None, montage: bool = True,
                panel_px: int = 192, montage_images: Sequence[str] | None = None,
                generated: _dt.datetime | None = None) -> str:
    """The page's HTML.

    Parameters
    ----------
    reports, rows : sequence
        The runs and their :meth:`RunReport.row` (in table order).
    out : Path
        The folder the page is written to (links are relative to it).
    sweeps : sequence of (name, folder)
        The sweeps reported on (the title names them).
    figures : sequence of Path
        PNG files to embed.
    loso_rows : sequence of mapping, optional
        The leave-one-study-out table's rows.
    montage, panel_px, montage_images
        Whether each run's section shows a montage, its panel width and the images to prefer.
    generated : datetime, optional
        The date shown (default: now).
    """
    generated = generated or _dt.datetime.now()
    title = page_title([name for name, _ in sweeps], len(reports))
    names = [f"<code>{esc(name)}</code>" for name, _ in sweeps]
    heading = esc(title) if not sweeps else esc(title[:title.index(":") + 1]) + \
        (" sweep " if len(sweeps) == 1 else " sweeps ") + ", ".join(names)
    incomplete = [r for r in reports if not r.complete]
    meta = [f"Generated {generated:%Y-%m-%d %H:%M}", f"{len(reports)} run(s)"]
    if incomplete:
        meta.append(f"{len(incomplete)} incomplete")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body><main>",
             f"<h1>{heading}</h1>", f'<p class="meta">{esc(" · ".join(meta))}</p>']
    parts += [f'<p class="meta">sweep <code>{esc(name)}</code>: <code>{esc(folder)}</code></p>'
              for name, folder in sweeps]
    parts += ["<h2>Runs</h2>",
              '<p class="note">Click a column header to sort (click again to reverse); missing '
              "values stay last. The address keeps the order "
              "(<code>report.html#sort=test_n_ssim:desc</code>). A run's name leads to its "
              "section below.</p>",
              runs_table(reports, rows), '<ul class="notes">',
              *(f"<li>{inline_markdown(note)}</li>" for note in column_notes()), "</ul>"]
    if incomplete:
        parts.append('<p class="note">Incomplete runs (no <code>metrics.json</code>): '
                     + ", ".join(esc(r.name) for r in incomplete) + "</p>")
    if loso_rows:
        parts += ["<h2>Leave one study out</h2>",
                  '<p class="note">Runs trained with <code>holdout=K</code>: trained and selected '
                  "on the other studies, tested on all of study K's volumes.</p>",
                  loso_table(loso_rows)]
    parts += _figure_parts(figures)
    parts.append("<h2>Run by run</h2>")
    parts += [run_section(r, run_anchor(i), out, montage, panel_px, montage_images)
              for i, r in enumerate(reports)]
    parts += ["</main>", f"<script>{SORTER}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _figure_parts(figures: Sequence[Path]) -> list[str]:
    """The "Figures" section: each chart shown, the montage of every run folded away."""
    shown = [Path(f) for f in figures if Path(f).is_file()]
    charts = [image_tag(f.read_bytes(), f.stem, _CAPTIONS.get(f.stem, f"`{f.name}`"))
              for f in shown if f.stem != "report_montage"]
    parts = ["<h2>Figures</h2>", '<div class="figures">', *charts, "</div>"] if shown else []
    for montage_file in (f for f in shown if f.stem == "report_montage"):
        # The montages of the runs' sections in one image: there, but folded away.
        parts += [f"<details><summary><code>{esc(montage_file.name)}</code>: the test montages "
                  "of the runs in one image</summary>",
                  image_tag(montage_file.read_bytes(), montage_file.stem,
                            _CAPTIONS["report_montage"]), "</details>"]
    return parts


def write_report_page(reports: Sequence[RunReport], rows: Sequence[Mapping[str, Any]],
                      out: Path, **options: Any) -> Path:
    """Write :func:`render_page` to ``<out>/report.html`` atomically and return its path."""
    return write_text_atomic(Path(out) / "report.html", render_page(reports, rows, out, **options))
