"""``report.html``: the self-contained page of ``python -m fmc.report``, and several sweeps in one.

Unit tests render the page from hand-made runs (escaping, no outside resources, sort values,
the per-run parts). The browser test opens a real report in headless Chromium (Debian's
``chromium``): the DOM after the page's script ran holds a row per run, the sorter orders them
when the address asks (``report.html#sort=<key>:<asc|desc>``), and a screenshot is a real
image. Without Chromium it is skipped, unless ``FMC_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from fmc.core.errors import FmcConfigError
from fmc.io.png import write_png
from fmc.reporting.html_page import render_page
from fmc.reporting.html_runs import VALIDATION_HISTORY, validation_image
from fmc.reporting.report import build_report
from fmc.reporting.runs import RunReport, WholeVolumeScores
from fmc.reporting.sweeps import sweep_names
from tests.conftest import assert_user_error, run_in_process
from tests.reporting.test_report import read_csv, sweep  # noqa: F401 - sweep: the fixture


class PageParser(HTMLParser):
    """Every tag with its attributes, the runs table's rows (``data-run`` and cell texts) and
    its header cells, from an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.rows: list[tuple[str, list[str]]] = []
        self.headers: list[dict[str, str]] = []
        self.runs_table: dict[str, str] = {}
        self._in_runs = self._cell = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag == "table" and attributes.get("id") == "runs":
            self._in_runs, self.runs_table = True, attributes
        elif self._in_runs and tag == "tr" and "data-run" in attributes:
            self.rows.append((attributes["data-run"], []))
        elif self._in_runs and tag == "th":
            self.headers.append(attributes)
        elif self._in_runs and tag == "td":
            self._cell, self._text = True, []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_runs = False
        elif tag == "td" and self._cell:
            self.rows[-1][1].append("".join(self._text).strip())
            self._cell = False

    def handle_data(self, data):
        if self._cell:
            self._text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def assert_self_contained(page: str) -> None:
    """No link or source outside the page except relative file links; no scheme but data:."""
    parser = parse(page)
    for tag, attributes in parser.tags:
        for name in ("src", "href", "srcset", "poster", "action"):
            value = attributes.get(name)
            if value is None:
                continue
            assert not re.match(r"^\s*(https?:|//|ftp:|file:)", value, re.I), (tag, name, value)
            assert value.startswith(("data:image/png;base64,", "#")) or ":" not in value, value
    assert "@import" not in page and "url(" not in page
    assert not re.search(r"https?://", page)
    assert [tag for tag, attributes in parser.tags if tag == "script" and attributes.get("src")] == []
    assert not any(tag in ("link", "iframe", "object", "embed") for tag, _ in parser.tags)


def hand_made_runs(tmp_path: Path) -> list[RunReport]:
    """Three runs: scored, scored worse, incomplete; strings with markup in them."""
    runs = []
    for index, (model, status) in enumerate([(0.3, "ok"), (-0.02, "ok"),
                                             (math.nan, "incomplete: no metrics.json")]):
        folder = tmp_path / "sweep dir" / str(index)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("study: 1\n")
        runs.append(RunReport(
            folder=folder, label=str(index), status=status, study="3", content="nucleus",
            channels="raw", loss="l1", run_name=f"<b>run{index}</b> & co",
            varied='loss=<script>alert("x")</script>',
            metrics=None if math.isnan(model) else {"best/val_n_ssim": 0.1 * index,
                                                   "global_step": 10 + index},
            scores=None if math.isnan(model) else WholeVolumeScores(model, 0.0, 0.1, "0.5", 2, 2)))
    return runs


def test_page_escapes_file_strings_and_needs_no_network(tmp_path: Path):
    runs = hand_made_runs(tmp_path)
    page = render_page(runs, [r.row() for r in runs], tmp_path / "out",
                       sweeps=[("sweep dir", tmp_path / "sweep dir")])
    assert_self_contained(page)
    assert '<script>alert("x")</script>' not in page and "<b>run0</b>" not in page
    assert "loss=&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;run0&lt;/b&gt; &amp; co" in page
    assert page.count("<script") == 1  # the sorter, inline
    assert "<title>Training report: sweep sweep dir</title>" in page
    assert "Generated " in page and "uniform 7-voxel window" in page  # the metric
    # Links relative to the page's folder, to each run's folder and config.
    hrefs = [a["href"] for tag, a in parse(page).tags if tag == "a" and "href" in a]
    assert "../sweep%20dir/0/" in hrefs and "../sweep%20dir/0/.hydra/config.yaml" in hrefs
    assert (tmp_path / "out" / unquote("../sweep%20dir/2/.hydra/config.yaml")).resolve() == \
        (runs[2].folder / ".hydra" / "config.yaml").resolve()


def test_runs_table_sort_values(tmp_path: Path):
    runs = hand_made_runs(tmp_path)
    parser = parse(render_page(runs, [r.row() for r in runs], tmp_path, montage=False))
    assert [name for name, _ in parser.rows] == ["0", "1", "2"]
    headers = {h["data-key"]: h for h in parser.headers}
    assert "sweep" not in headers  # one sweep: no sweep column
    assert headers["test_n_ssim"]["data-type"] == "number"
    assert headers["run"]["data-type"] == "text" and headers["status"]["aria-sort"] == "none"
    cells = [attributes for tag, attributes in parser.tags if tag == "td"]
    values = [c.get("data-value") for c in cells if "data-value" in c]
    assert "0.3" in values and "-0.02" in values  # exact values, not the shown +0.3000
    columns = list(headers)
    model = [row[1][columns.index("test_n_ssim")] for row in parser.rows]
    assert model == ["+0.3000", "-0.0200", "-"]
    # Missing numbers have an empty sort value (the sorter puts them last).
    test_cells = [c for c in cells if c.get("class", "").startswith("num")]
    assert any(c.get("data-value") == "" for c in test_cells)


def test_leave_one_study_out_table(tmp_path: Path):
    from fmc.reporting.loso import HeldOutScores, loso_rows

    runs = hand_made_runs(tmp_path)
    rows = loso_rows([HeldOutScores("nucleus", 2, "0", {"a": 0.1, "b": -0.05}),
                      HeldOutScores("nucleus", 4, "1", {"c": 0.2})])
    page = render_page(runs, [r.row() for r in runs], tmp_path, loso_rows=rows, montage=False)
    assert "<h2>Leave one study out</h2>" in page
    assert 'data-key="worst" data-type="number"' in page
    assert '<td class="num neg" data-value="-0.05">-0.0500</td>' in page


def test_validation_image_choice(tmp_path: Path):
    assert validation_image(tmp_path) is None  # no validation_images/: nothing to show
    folder = tmp_path / "validation_images"
    for step in (50, 100, 1000):
        write_png(folder / f"step{step:06d}.png", np.full((4, 4), step % 255, np.uint8))
    assert validation_image(tmp_path)[0].name == "step001000.png"  # the newest
    (tmp_path / VALIDATION_HISTORY).write_text(json.dumps([
        {"step": 50, "score": 0.1, "best": True}, {"step": 100, "score": 0.2, "best": True},
        {"step": 1000, "score": 0.15, "best": False}]))
    path, why = validation_image(tmp_path)
    assert path.name == "step000100.png" and "best step (100" in why


def test_run_section_parts(tmp_path: Path):
    runs = hand_made_runs(tmp_path)
    folder = runs[0].folder
    write_png(folder / "validation_images" / "step000010.png", np.zeros((8, 8), np.uint8))
    (folder / "test_volumes.csv").write_text(
        "file,study,content,n_ssim,identity_n_ssim,gaussian_n_ssim,gaussian_sigma,ssim\n"
        "image_<1>_nucleus_angle.tif,3,nucleus,0.25,0.0,0.01,0.500000,0.751806\n"
        "image_2_nucleus_angle.tif,3,nucleus,-0.05,0.0,,1.000000,0.9\n")
    page = render_page(runs, [r.row() for r in runs], tmp_path)
    assert_self_contained(page)
    assert "Whole-volume validation at step 10" in page
    assert "image_&lt;1&gt;_nucleus_angle.tif" in page and "+0.2500" in page
    assert 'data-value="-0.05"' in page
    # Other columns of numbers: 4 significant digits, sorted as numbers.
    assert '<td class="num" data-value="0.751806">0.7518</td>' in page
    assert '<th scope="col" data-key="ssim" data-type="number"' in page
    # No test prediction: the montage is left out with a note.
    assert "No montage: the run has no test prediction" in page


def test_sweep_names_are_distinct(tmp_path: Path):
    assert sweep_names([tmp_path / "a" / "multirun", tmp_path / "b" / "multirun",
                        tmp_path / "c"]) == ["a/multirun", "b/multirun", "c"]
    assert sweep_names([tmp_path / "x"]) == ["x"]


def two_sweeps(sweep_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the fixture's sweep, both folders named ``multirun``."""
    first, second = tmp_path / "a" / "multirun", tmp_path / "b" / "multirun"
    shutil.copytree(sweep_folder, first)
    shutil.copytree(sweep_folder, second)
    return first, second


def test_several_sweeps_in_one_table(sweep: dict, tmp_path: Path):  # noqa: F811
    first, second = two_sweeps(sweep["sweep"], tmp_path)
    # The newest fmc.train folder (last) beside a folder.
    work = tmp_path / "work"
    shutil.copytree(sweep["sweep"], work / "outputs" / "train" / "multirun" / "2026-01-02_03-04-05")
    out = tmp_path / "compare"
    result = run_in_process("fmc.report", f"sweep=[{first},{second},last]", f"output={out}",
                            f"input={sweep['raw']}", "evaluate_missing=false", "montage=false",
                            cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out / "report.csv")
    assert list(rows[0])[:2] == ["sweep", "run"]
    assert [(r["sweep"], r["run"]) for r in rows] == [
        (s, r) for s in ("a/multirun", "b/multirun", "2026-01-02_03-04-05") for r in "012"]
    assert "| sweep | run |" in (out / "report.md").read_text()
    assert f"wrote {out / 'report.html'}" in result.stdout
    parser = parse((out / "report.html").read_text())
    assert [name for name, _ in parser.rows][:4] == ["a/multirun/0", "a/multirun/1",
                                                      "a/multirun/2", "b/multirun/0"]
    assert parser.headers[0]["data-key"] == "sweep"
    # Several sweeps need output=; one sweep does not write a sweep column.
    assert_user_error(run_in_process("fmc.report", f"sweep=[{first},{second}]"),
                      "output=DIR", "conf/report.yaml")
    with pytest.raises(FmcConfigError, match="needs output=DIR"):
        build_report(sweep=[first, second], evaluate_missing=False, montage=False)
    single = build_report(sweep=[first], evaluate_missing=False, montage=False)
    assert "sweep" not in read_csv(first / "report.csv")[0]
    assert [r.name for r in single.runs] == ["0", "1", "2"]


# ----------------------------------------------------------------------------------------------
# In a real browser
# ----------------------------------------------------------------------------------------------
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


def chromium_binary() -> str:
    """Debian's chromium; skip (or fail with FMC_REQUIRE_BROWSER=1) without it."""
    found = shutil.which("chromium") or (str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file()
                                         else None)
    if found is None:
        message = "no chromium browser (Debian: apt-get install chromium; `make browser`)"
        if os.environ.get("FMC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FMC_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    return found


def chromium(binary: str, *arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, no network chatter, 60 s at most."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *arguments],
            capture_output=True, text=True, timeout=60, check=False)


def test_without_a_browser_the_browser_test_skips_unless_required(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(f"{__name__}.DEBIAN_CHROMIUM", tmp_path / "none")
    monkeypatch.delenv("FMC_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        chromium_binary()
    monkeypatch.setenv("FMC_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="FMC_REQUIRE_BROWSER=1 but no chromium"):
        chromium_binary()


def dom_rows(binary: str, url: str) -> PageParser:
    result = chromium(binary, "--dump-dom", url)
    assert result.returncode == 0 and "<table" in result.stdout, result.stderr[-2000:]
    return parse(result.stdout)


def test_report_page_in_a_browser(sweep: dict, tmp_path: Path):  # noqa: F811
    binary = chromium_binary()
    first, second = two_sweeps(sweep["sweep"], tmp_path)
    write_png(first / "0" / "validation_images" / "step000040.png",
              np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)))
    (first / "0" / "test_volumes.csv").write_text(
        "file,study,content,n_ssim,identity_n_ssim,gaussian_n_ssim,gaussian_sigma\n"
        "image_0_nucleus_angle.tif,3,nucleus,0.3,0.0,0.15,1\n")
    out = tmp_path / "compare"
    result = run_in_process("fmc.report", f"sweep=[{first},{second}]", f"output={out}",
                            f"input={sweep['raw']}", "evaluate_missing=false", "montage_panel_px=32")
    assert result.returncode == 0, result.stderr[-3000:]
    page = out / "report.html"
    assert_self_contained(page.read_text())
    url = page.resolve().as_uri()

    loaded = dom_rows(binary, url)
    names = [f"{s}/{r}" for s in ("a/multirun", "b/multirun") for r in "012"]
    assert [name for name, _ in loaded.rows] == names
    columns = [h["data-key"] for h in loaded.headers]
    model = {name: cells[columns.index("test_n_ssim")] for name, cells in loaded.rows}
    assert model["a/multirun/0"] == "+0.3000" and model["b/multirun/1"] == "-0.0200"
    assert model["a/multirun/2"] == "-"  # the incomplete run
    assert {cells[0] for _, cells in loaded.rows} == {"a/multirun", "b/multirun"}
    # Embedded: the two figures, the montages of the four predicted runs, a validation image.
    images = [attributes["src"] for tag, attributes in loaded.tags if tag == "img"]
    assert len(images) == 2 + 4 + 1
    assert all(src.startswith("data:image/png;base64,") for src in images)

    # The sorter, run by the browser: ascending, then descending; the missing score stays last.
    ascending = dom_rows(binary, url + "#sort=test_n_ssim:asc")
    assert [n for n, _ in ascending.rows] == ["a/multirun/1", "b/multirun/1", "a/multirun/0",
                                              "b/multirun/0", "a/multirun/2", "b/multirun/2"]
    assert ascending.runs_table["data-sorted"] == "test_n_ssim:asc"
    sorted_header = next(h for h in ascending.headers if h["data-key"] == "test_n_ssim")
    assert sorted_header["aria-sort"] == "ascending"
    descending = dom_rows(binary, url + "#sort=test_n_ssim:desc")
    assert [n for n, _ in descending.rows] == ["a/multirun/0", "b/multirun/0", "a/multirun/1",
                                               "b/multirun/1", "a/multirun/2", "b/multirun/2"]
    # Text in natural order: run labels, descending.
    by_run = dom_rows(binary, url + "#sort=run:desc")
    assert [n for n, _ in by_run.rows] == ["a/multirun/2", "b/multirun/2", "a/multirun/1",
                                           "b/multirun/1", "a/multirun/0", "b/multirun/0"]

    screenshot = tmp_path / "page.png"
    shot = chromium(binary, f"--screenshot={screenshot}", "--window-size=1400,1000",
                    "--hide-scrollbars", url)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.size == (1400, 1000)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # text and lines, not blank
    assert (pixels == 255).mean() > 0.5  # a white page, mostly
