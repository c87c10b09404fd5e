"""The report's tables: the printed text table, the Markdown table and ``report.csv``.

Each takes the rows of :meth:`fmc.reporting.runs.RunReport.row`; rows of several sweeps carry a
non-empty ``sweep`` and get a ``sweep`` column first. :func:`column_notes` says what the columns
mean (``report.md`` and ``report.html`` print it).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_COLUMNS = ["run", "folder", "run_name", "status", "study", "content", "channels", "loss",
                  "varied", "selection", "val_n_ssim", "test_n_ssim", "test_worst_n_ssim",
                  "identity_n_ssim", "gaussian_n_ssim",
                  "gaussian_sigma", "model_minus_gaussian", "n_test", "n_test_scored",
                  "checkpoint", "epochs", "global_step"]
_SHOWN = [("run", "run"), ("study", "study"), ("content", "content"), ("channels", "channels"),
          ("loss", "loss"), ("varied", "varied"), ("val_n_ssim", "val N_SSIM (best)"),
          ("test_n_ssim", "test N_SSIM (model)"), ("test_worst_n_ssim", "worst test volume"),
          ("identity_n_ssim", "identity"),
          ("gaussian", "best Gaussian (sigma)"), ("model_minus_gaussian", "model - Gaussian"),
          ("n_test", "test volumes"), ("global_step", "steps"), ("checkpoint_name", "checkpoint"),
          ("status", "status")]


def several_sweeps(rows: Sequence[dict[str, Any]]) -> bool:
    """True when the rows come from several sweeps (a row's ``sweep`` is set)."""
    return any(row.get("sweep") for row in rows)


def shown_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key of :func:`display_row`, title) of the printed table's columns."""
    return ([("sweep", "sweep")] if several_sweeps(rows) else []) + _SHOWN


def column_notes() -> list[str]:
    """What the columns mean, one Markdown line (``**name**: text``) each."""
    from fmc.evaluation.metrics import METRIC_SETTINGS
    from fmc.reporting.runs import SCORES_DIR

    return ["**varied**: the run's command-line overrides that not every run shares.",
            "**val N_SSIM**: best validation score during training (`metrics.json`): whole "
            "validation volumes by the challenge metric, or the patch proxy where marked "
            "(patch).",
            f"**test N_SSIM**: mean over whole test volumes of the run's split, from "
            f"`<run>/{SCORES_DIR}/summary.csv` (`fmc.evaluate`), else from the run's own "
            "end-of-training scoring (`metrics.json` `test/n_ssim`, the same metric); worst "
            "test volume from `metrics.json`; identity is 0 by definition; best Gaussian is "
            "the best σ (voxels) of evaluate's sweep.",
            f"metric: {METRIC_SETTINGS}"]


def display_row(row: dict[str, Any]) -> dict[str, str]:
    """The row's cells as the printed table shows them (signed 4-decimal numbers, '-' if none)."""
    def signed(value: Any) -> str:
        return f"{value:+.4f}" if isinstance(value, float) and math.isfinite(value) else "-"

    shown = {key: str(row.get(key, "")) for key, _ in _SHOWN}
    for key in ("val_n_ssim", "test_n_ssim", "test_worst_n_ssim", "identity_n_ssim",
                "model_minus_gaussian"):
        shown[key] = signed(row[key])
    shown["varied"] = row["varied"] or "-"
    shown["sweep"] = str(row.get("sweep") or "-")
    if row["selection"] == "val/n_ssim" and shown["val_n_ssim"] != "-":
        shown["val_n_ssim"] += " (patch)"
    shown["gaussian"] = signed(row["gaussian_n_ssim"]) + \
        (f" ({row['gaussian_sigma']})" if row["gaussian_sigma"] else "")
    n_test, scored = row["n_test"], row["n_test_scored"]
    shown["n_test"] = "-" if n_test == "" else str(n_test) if scored == n_test \
        else f"{scored}/{n_test}"
    shown["checkpoint_name"] = Path(row["checkpoint"]).name if row["checkpoint"] else "-"
    return shown


def format_report_table(rows: Sequence[dict[str, Any]]) -> str:
    """The report as an aligned text table (what the command prints)."""
    columns = shown_columns(rows)
    header = [title for _, title in columns]
    lines = [[display_row(row)[key] for key, _ in columns] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    render = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
              for line in [header, *lines]]
    render.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(render)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The report as a Markdown table."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    columns = shown_columns(rows)
    lines = ["| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        shown = display_row(row)
        lines.append("| " + " | ".join(cell(shown[key]) for key, _ in columns) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``report.csv``: every column of :data:`REPORT_COLUMNS` (``sweep`` first when the rows
    come from several sweeps), numbers with 6 decimals."""
    buffer = io.StringIO()
    columns = (["sweep"] if several_sweeps(rows) else []) + REPORT_COLUMNS
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                             f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
