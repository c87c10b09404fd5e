"""The building blocks of ``report.html``: its style, its table sorter, escaping, embedded images
and sortable tables.

The page needs no network and no other file: the style and the sorter are inline, images are
``data:`` URIs. The sorter (vanilla JavaScript, :data:`SORTER`) makes every ``table.sortable``
sortable by a click (or Enter) on a column header: numbers by their ``data-value`` (the exact
value; the cell shows it rounded), text in natural order (``run 2`` before ``run 10``);
a second click reverses; missing values (empty ``data-value``, ``-``) stay last either way.
The runs table (``id="runs"``) also sorts from the address, ``report.html#sort=<key>`` or
``#sort=<key>:desc``, and a click writes its order there, so a sorted view can be linked to.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

STYLE = """
:root { --line: #d0d7de; --muted: #57606a; --accent: #0969da; --alt: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: #1f2328; background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1800px; margin: 0 auto; padding: 18px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h1 code { font-size: 19px; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 6px; }
p { margin: 6px 0; }
ul.notes { margin: 6px 0; padding-left: 20px; max-width: 1100px; }
.meta, .note, figcaption, .muted { color: var(--muted); }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  background: var(--alt); padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 12.5px; }
.scroll > table { width: 100%; }
th, td { padding: 4px 6px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--alt); cursor: pointer; user-select: none; vertical-align: bottom;
  min-width: 3.5em; }
thead th:hover, thead th:focus { background: #eaeef2; outline: none; }
th .arrow::after { content: "\\2195"; color: #8c959f; margin-left: 3px; font-size: 11px; }
th[aria-sort="ascending"] .arrow::after { content: "\\25B2"; color: var(--accent); }
th[aria-sort="descending"] .arrow::after { content: "\\25BC"; color: var(--accent); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.num.split { white-space: normal; }
.nw { white-space: nowrap; }
td.wrap { max-width: 20em; overflow-wrap: break-word; }
td.small { font-size: 12px; }
td.ckpt { min-width: 11em; }
.scroll.fit { display: inline-block; max-width: 100%; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef5ff; }
.neg { color: #b42318; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
figure { margin: 10px 0; }
figcaption { padding-top: 4px; max-width: 60em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 4px; }
.figures { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.figures > figure { flex: 0 1 auto; max-width: 100%; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--accent); }
.run { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
.run .images { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.run .images > figure { flex: 1 1 0; min-width: 320px; margin: 6px 0; }
.links a { margin-right: 14px; }
.badge { display: inline-block; font-size: 12px; padding: 1px 7px; border-radius: 10px;
  background: #dafbe1; color: #116329; vertical-align: middle; margin-left: 6px; }
.badge.warn { background: #fff1c2; color: #7d4e00; }
"""

SORTER = """
(function () {
  "use strict";
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  function keyOf(cell, numeric) {
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value")
                                              : cell.textContent.trim();
    if (numeric) { var x = parseFloat(raw); return isFinite(x) ? x : null; }
    return raw === "" || raw === "-" ? null : raw;
  }
  function sortTable(table, th, descending) {
    var index = th.cellIndex, numeric = th.getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var items = Array.prototype.map.call(body.rows, function (row, i) {
      return {row: row, key: keyOf(row.cells[index], numeric), i: i};
    });
    items.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return ((a.key === null) - (b.key === null)) || a.i - b.i;
      }
      var d = numeric ? a.key - b.key : collator.compare(a.key, b.key);
      return (descending ? -d : d) || a.i - b.i;
    });
    items.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    table.setAttribute("data-sorted", th.getAttribute("data-key") + (descending ? ":desc" : ":asc"));
  }
  function fromAddress() {
    var match = /(?:^#|&)sort=([^&:]+)(?::(asc|desc))?/.exec(window.location.hash);
    var table = document.getElementById("runs");
    if (!match || !table) { return; }
    var key = decodeURIComponent(match[1]);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (th.getAttribute("data-key") === key) { sortTable(table, th, match[2] === "desc"); }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      function activate() {
        var descending = th.getAttribute("aria-sort") === "ascending";
        sortTable(table, th, descending);
        if (table.id === "runs") {
          try {
            window.history.replaceState(null, "", "#sort=" +
              encodeURIComponent(th.getAttribute("data-key")) + (descending ? ":desc" : ":asc"));
          } catch (ignored) { /* a page without history (opened in a sandbox) just sorts */ }
        }
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); }
      });
    });
  });
  window.addEventListener("hashchange", fromAddress);
  fromAddress();
})();
"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML and inside a quoted attribute."""
    return html.escape(str(value), quote=True)


def inline_markdown(text: str) -> str:
    """Escape ``text`` and render its ``**bold**`` and ```code``` spans (the report's notes)."""
    escaped = esc(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def relative_href(target: Path, page_folder: Path, folder: bool = False) -> str:
    """An escaped relative link from a page in ``page_folder`` to ``target`` (works from disk)."""
    relative = os.path.relpath(Path(target).resolve(), Path(page_folder).resolve())
    return esc(quote(Path(relative).as_posix()) + ("/" if folder else ""))


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 grey or RGB array encoded as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_tag(png: bytes, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with the PNG embedded as a ``data:`` URI and an (escaped) caption."""
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    text = f"<figcaption>{inline_markdown(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{source}" alt="{esc(alt)}">{text}</figure>'


def number_value(value: object) -> str:
    """The exact number for a ``data-value`` attribute; '' when missing (sorts last)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return format(number, ".10g") if math.isfinite(number) else ""


def signed(value: object) -> str:
    """A score as the tables print it: ``+0.1234``, or ``-`` when missing."""
    text = number_value(value)
    return f"{float(text):+.4f}" if text else "-"


@dataclass(frozen=True)
class Column:
    """A column of a sortable table: its key (for ``#sort=``), title and kind."""

    key: str
    title: str
    numeric: bool = False
    css: str = ""


@dataclass(frozen=True)
class Cell:
    """One table cell: its HTML content (already escaped) and its sort value (None: the text)."""

    content: str
    value: str | None = None
    css: str = ""


def sortable_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], table_id: str = "",
                   row_attributes: Sequence[dict[str, str]] | None = None, fit: bool = False
                   ) -> str:
    """A ``<table class="sortable">`` inside a horizontally scrolling box (as wide as the page,
    or as the table with ``fit``)."""
    head = "".join(
        f'<th scope="col" data-key="{esc(c.key)}"'
        + (' data-type="number" class="num"' if c.numeric else ' data-type="text"')
        + f' aria-sort="none">{esc(c.title)}<span class="arrow"></span></th>' for c in columns)
    body = []
    for index, row in enumerate(rows):
        extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in
                        (row_attributes[index] if row_attributes else {}).items())
        cells = []
        for column, cell in zip(columns, row, strict=True):
            classes = " ".join(x for x in (("num" if column.numeric else ""), column.css, cell.css)
                               if x)
            attributes = (f' class="{classes}"' if classes else "") + \
                ("" if cell.value is None else f' data-value="{esc(cell.value)}"')
            cells.append(f"<td{attributes}>{cell.content}</td>")
        body.append(f"<tr{extra}>{''.join(cells)}</tr>")
    identity = f' id="{esc(table_id)}"' if table_id else ""
    box = "scroll fit" if fit else "scroll"
    return (f'<div class="{box}"><table class="sortable"{identity}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def score_cell(value: object) -> Cell:
    """A signed score cell sorted by its exact value; negative scores in red."""
    text = number_value(value)
    return Cell(esc(signed(value)), text, "neg" if text and float(text) < 0 else "")
