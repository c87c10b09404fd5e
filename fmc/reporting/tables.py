"""The report's tables: the printed text table, the Markdown table and ``report.csv``.

Each takes the rows of :meth:`fmc.reporting.runs.RunReport.row`.
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


def _display(row: dict[str, Any]) -> dict[str, str]:
    def signed(value: Any) -> str:
        return f"{value:+.4f}" if isinstance(value, float) and math.isfinite(value) else "-"

    shown = {key: str(row.get(key, "")) for key, _ in _SHOWN}
    for key in ("val_n_ssim", "test_n_ssim", "test_worst_n_ssim", "identity_n_ssim",
                "model_minus_gaussian"):
        shown[key] = signed(row[key])
    shown["varied"] = row["varied"] or "-"
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
    header = [title for _, title in _SHOWN]
    lines = [[_display(row)[key] for key, _ in _SHOWN] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]
    render = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
              for line in [header, *lines]]
    render.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(render)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The report as a Markdown table."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(title for _, title in _SHOWN) + " |",
             "|" + "|".join("---" for _ in _SHOWN) + "|"]
    for row in rows:
        shown = _display(row)
        lines.append("| " + " | ".join(cell(shown[key]) for key, _ in _SHOWN) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``report.csv``: every column of :data:`REPORT_COLUMNS`, numbers with 6 decimals."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                             f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
