"""``python -m fmc.report sweep=DIR``: one table comparing the runs of a training sweep.

For every run folder (a ``python -m fmc.train`` Hydra run folder: ``metrics.json``,
``checkpoints/``, ``.hydra/config.yaml``) the report gathers

* what was trained (study, content, input channels, loss) and the best validation N_SSIM
  (patch level, from ``metrics.json``);
* the test N_SSIM on whole volumes, from ``<run>/test_scores/summary.csv`` (``fmc.evaluate``'s
  table). Runs without one are scored first when ``evaluate_missing`` is true: the real
  ``python -m fmc.predict`` and ``python -m fmc.evaluate`` commands run as subprocesses on the
  run's test split, with the identity and Gaussian (σ sweep) baselines beside the model.

It writes ``report.md``, ``report.csv``, a bar chart ``report_nssim.png`` (model vs best
Gaussian per run), ``report_montage.png`` (max projections, see :mod:`fmc.evaluation.montage`)
and ``report.html``, all of it on one self-contained page (:mod:`fmc.reporting.html_page`).
A run without ``metrics.json`` (training not finished, or failed) is listed as incomplete.
Several sweeps (``sweep=[A,B] output=DIR``) share one table with a ``sweep`` column
(:mod:`fmc.reporting.sweeps`).

Everything here works without Hydra: :func:`build_report` takes plain values, :func:`run` a
:class:`ReportSettings` (``conf/report.yaml``'s keys, read once by ``fmc.report``).
The parts live beside it: reading runs in :mod:`fmc.reporting.runs`, scoring the unscored ones in
:mod:`fmc.reporting.evaluate_runs`, the tables in :mod:`fmc.reporting.tables`, the figures in
:mod:`fmc.reporting.figures`, the leave-one-study-out section in :mod:`fmc.reporting.loso` and
the page in :mod:`fmc.reporting.html_page`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmc.core.config_values import flag, whole_number
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import write_text_atomic
from fmc.core.naming import METRICS_FILE
from fmc.models.checkpoint import selected_checkpoint
from fmc.reporting.evaluate_runs import evaluate_run, recorded_checkpoint
from fmc.reporting.figures import write_figures
from fmc.reporting.html_page import write_report_page
from fmc.reporting.loso import loso_section
from fmc.reporting.runs import (
    SCORES_DIR,
    RunReport,
    WholeVolumeScores,
    as_number,
    config_value,
    default_raw_folder,
    first_scored_image,
    read_metrics,
    read_run_config,
    read_run_overrides,
    read_test_scores,
    varied_overrides,
)
from fmc.reporting.sweeps import gather_runs, sweep_list, sweep_names
from fmc.reporting.tables import column_notes, csv_text, format_report_table, markdown_table

log = logging.getLogger("fmc.report")


@dataclass
class ReportResult:
    """What :func:`build_report` produced."""

    runs: list[RunReport]
    files: list[Path]
    table: str


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------
def _score_if_asked(report: RunReport, cfg, raw: str | Path | None, evaluate_missing: bool,
                    predict_overrides: Sequence[str], evaluate_overrides: Sequence[str]) -> None:
    """Score a finished run that has no test scores yet, when asked and possible; else say why
    in its status."""
    data_root = config_value(cfg, "data.root")
    if not report.complete:
        return  # an unfinished run is not scored: its checkpoints are still changing
    if not evaluate_missing:
        report.status = f"not evaluated (no {SCORES_DIR}/summary.csv, evaluate_missing=false)"
    elif cfg is None:
        report.status = "not evaluated: no .hydra/config.yaml to find the test split in"
    elif raw is None and data_root is not None and report.raw is None:
        report.status = f"not evaluated: give input=DIR, the raw TIFFs of data.root={data_root}"
    else:
        # A run trained on the embedded dataset is scored against evaluate's own default.
        evaluate_run(report, None if raw is None and data_root is None else report.raw,
                     predict_overrides, evaluate_overrides)


def inspect_run(folder: Path, label: str, raw: str | Path | None = None,
                evaluate_missing: bool = False, predict_overrides: Sequence[str] = (),
                evaluate_overrides: Sequence[str] = (), sweep: str = "") -> RunReport:
    """Gather one run's facts and test scores (scoring it first if asked and needed);
    ``sweep`` names its sweep when the report compares several."""
    report = RunReport(folder=folder, label=label, sweep=sweep)
    try:
        report.metrics = read_metrics(folder)
    except FmcInputError as error:
        report.status = f"incomplete: {error}"
    cfg = read_run_config(folder)
    metrics = report.metrics or {}
    for key, config_key in (("study", "study"), ("content", "content"),
                            ("channels", "channels.name"), ("loss", "loss.name"),
                            ("run_name", "run_name")):
        value = metrics.get(key, config_value(cfg, config_key))
        if key == "run_name" and value == "auto":
            value = None  # an unfinished run: its name is worked out when training starts
        setattr(report, key, "" if value is None else str(value))
    if not report.complete and report.status == "ok":
        report.status = f"incomplete: no {METRICS_FILE} (training not finished?)"
    if raw is not None:
        report.raw = Path(raw)
    elif cfg is not None:
        report.raw = default_raw_folder(config_value(cfg, "data.root"))
    report.checkpoint = selected_checkpoint(folder, report.metrics)
    scores_dir = folder / SCORES_DIR
    if not (scores_dir / "summary.csv").is_file():
        _score_if_asked(report, cfg, raw, evaluate_missing, predict_overrides, evaluate_overrides)
    report.scores = read_test_scores(scores_dir, report.content or None)
    report.overrides = read_run_overrides(folder)
    if report.scores is None and math.isfinite(as_number(metrics.get("test/n_ssim"))):
        # Training scored its test volumes itself (the same metric as fmc.evaluate, no baselines).
        count = len(metrics.get("test/volumes") or {})
        report.scores = WholeVolumeScores(model=as_number(metrics["test/n_ssim"]), n_images=count,
                                          n_scored=count)
        if report.status.startswith("not evaluated"):
            report.status = "ok"
    elif report.scores is not None:
        report.checkpoint = recorded_checkpoint(scores_dir) or report.checkpoint
        report.first_test_image = first_scored_image(scores_dir)
    return report


# ----------------------------------------------------------------------------------------------
# The whole report
# ----------------------------------------------------------------------------------------------
def build_report(sweep: str | Path | Sequence[str | Path] | None = None,
                 runs: Sequence[str | Path] = (),
                 output: str | Path | None = None, raw: str | Path | None = None,
                 evaluate_missing: bool = True, montage: bool = True,
                 montage_images: Sequence[str] | None = None, montage_max_images: int = 4,
                 montage_panel_px: int = 192, predict_overrides: Sequence[str] = (),
                 evaluate_overrides: Sequence[str] = ()) -> ReportResult:
    """Report on the runs of ``sweep`` (a folder, ``last``, or a list of them) and/or the run
    folders ``runs``; write the files to ``output`` (default: the sweep folder). ``raw``: the
    folder of raw TIFF pairs (the command's ``input=``), None: each run's own.

    Returns
    -------
    ReportResult
        The runs, the files written and the printed table.

    Raises
    ------
    FmcInputError
        If a folder does not exist or the sweep holds no run.
    FmcConfigError
        If neither ``sweep`` nor ``runs`` is given, or ``output`` is missing without a sweep or
        with several.
    """
    sweeps = sweep_list(sweep)  # last: the newest fmc.train folder
    if not sweeps and not runs:
        raise FmcConfigError("nothing to report on: give sweep=DIR (a multirun folder of "
                             "python -m fmc.train) or runs=[RUN_DIR,...]")
    if int(montage_max_images) < 1 or int(montage_panel_px) < 16:
        raise FmcConfigError("montage_max_images must be >= 1 and montage_panel_px >= 16 "
                             "(conf/report.yaml)")
    if output is None and len(sweeps) > 1:
        raise FmcConfigError(f"sweep=[...] with {len(sweeps)} sweeps needs output=DIR, the folder "
                             "for the report of them all (conf/report.yaml), e.g. "
                             "output=reports/compare")
    if len(sweeps) == 1:
        log.info("report on %s", sweeps[0])
    folders = gather_runs(sweeps, runs)
    if output is None and not sweeps:
        raise FmcConfigError("output=DIR is needed with runs=[...] (with sweep=DIR the report "
                             "goes into the sweep folder)")
    out = Path(output) if output is not None else sweeps[0]
    reports = [inspect_run(item.folder, item.label, raw, evaluate_missing, predict_overrides,
                           evaluate_overrides, item.sweep) for item in folders]
    for report, varied in zip(reports, varied_overrides([r.overrides for r in reports]),
                              strict=True):
        report.varied = varied
    rows = [r.row() for r in reports]
    table = format_report_table(rows)
    files = [write_text_atomic(out / "report.csv", csv_text(rows))]
    figures = write_figures(reports, out, montage, montage_images, int(montage_max_images),
                            int(montage_panel_px))
    loso = loso_section(reports, out)
    if loso is not None:
        table += "\n\nLeave one study out (N_SSIM on the held-out study's volumes):\n" + loso[0]
        figures.append(loso[1])
    names = sweep_names(sweeps)
    files.insert(0, write_text_atomic(out / "report.md", _markdown(reports, rows, sweeps, names,
                                                                   figures, loso)))
    files += figures
    files.append(write_report_page(
        reports, rows, out, sweeps=list(zip(names, sweeps, strict=True)), figures=figures,
        loso_rows=loso[2] if loso is not None else None, montage=montage,
        panel_px=int(montage_panel_px), montage_images=montage_images))
    return ReportResult(reports, files, table)


def _markdown(reports: Sequence[RunReport], rows, sweeps: Sequence[Path], names: Sequence[str],
              figures: Sequence[Path], loso: tuple[str, Path, Any] | None = None) -> str:
    source = f"sweep `{sweeps[0]}`" if len(sweeps) == 1 else \
        "sweeps " + ", ".join(f"`{n}` (`{s}`)" for n, s in zip(names, sweeps, strict=True)) \
        if sweeps else f"{len(reports)} run folder(s)"
    parts = [f"# Training report: {source}", "", *(f"- {note}" for note in column_notes()), "",
             markdown_table(rows), ""]
    if loso is not None:
        parts += ["## Leave one study out", "",
                  "Runs trained with `holdout=K`: trained and selected on the other studies, "
                  "tested on all of study K's volumes (`metrics.json` `test/volumes`).", "",
                  loso[0], ""]
    incomplete = [r for r in reports if not r.complete]
    if incomplete:
        parts += [f"Incomplete runs (no `{METRICS_FILE}`): "
                  + ", ".join(f"`{r.name}`" for r in incomplete), ""]
    for figure in figures:
        parts += [f"![{figure.stem}]({figure.name})", ""]
    return "\n".join(parts)


def _as_list(value: Any) -> list:
    from omegaconf import OmegaConf

    if value is None:
        return []
    if OmegaConf.is_list(value):
        return [str(v) for v in OmegaConf.to_container(value, resolve=True)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


WHERE = "conf/report.yaml"


@dataclass(frozen=True)
class ReportSettings:
    """The runs ``fmc.report`` compares, and its figures.

    One field per key of ``conf/report.yaml`` but ``verbose`` (:mod:`fmc.core.logs` reads that);
    the defaults are in that file only. ``fmc.report`` builds it with :meth:`from_config`.

    Attributes
    ----------
    sweep : tuple of str
        Sweep folders (or ``last``); empty: none.
    runs : tuple of str
        Run folders, besides or instead of ``sweep``.
    output : str or None
        Where the report files go; None: the sweep folder.
    input : str or None
        Folder of the raw TIFF pairs; None: each run's own.
    evaluate_missing : bool
        Score the runs that have no test scores yet.
    predict_overrides, evaluate_overrides : tuple of str
        Extra overrides of those ``fmc.predict`` and ``fmc.evaluate`` runs.
    montage : bool
        Write ``report_montage.png``.
    montage_images : tuple of str or None
        Test images to show; None: the first of each run.
    montage_max_images, montage_panel_px : int
        Images in the montage at most, and a panel's width in pixels.
    """

    sweep: tuple[str, ...]
    runs: tuple[str, ...]
    output: str | None
    input: str | None
    evaluate_missing: bool
    predict_overrides: tuple[str, ...]
    evaluate_overrides: tuple[str, ...]
    montage: bool
    montage_images: tuple[str, ...] | None
    montage_max_images: int
    montage_panel_px: int

    @classmethod
    def from_config(cls, cfg) -> ReportSettings:
        """The settings of a composed ``conf/report.yaml`` config; the folders themselves are
        checked by :func:`build_report`.

        Raises
        ------
        FmcConfigError
            For a flag that is not true or false, or a montage size that is not a whole number.
        """
        return cls(
            sweep=tuple(_as_list(cfg.sweep)), runs=tuple(_as_list(cfg.runs)),
            output=None if cfg.output is None else str(cfg.output),
            input=None if cfg.input is None else str(cfg.input),
            evaluate_missing=flag(cfg.evaluate_missing, "evaluate_missing", WHERE),
            predict_overrides=tuple(_as_list(cfg.predict_overrides)),
            evaluate_overrides=tuple(_as_list(cfg.evaluate_overrides)),
            montage=flag(cfg.montage, "montage", WHERE),
            montage_images=tuple(_as_list(cfg.montage_images)) or None,
            montage_max_images=whole_number(cfg.montage_max_images, "montage_max_images", 1,
                                            WHERE),
            montage_panel_px=whole_number(cfg.montage_panel_px, "montage_panel_px", 1, WHERE))


def run(settings: ReportSettings) -> ReportResult:
    """Build the report of ``settings`` (see ``conf/report.yaml``) and print it.

    Parameters
    ----------
    settings : ReportSettings
        What to report on (:meth:`ReportSettings.from_config`).

    Returns
    -------
    ReportResult
        The runs, the files written and the printed table.
    """
    result = build_report(
        sweep=list(settings.sweep) or None, runs=list(settings.runs), output=settings.output,
        raw=settings.input, evaluate_missing=settings.evaluate_missing, montage=settings.montage,
        montage_images=None if settings.montage_images is None else list(settings.montage_images),
        montage_max_images=settings.montage_max_images,
        montage_panel_px=settings.montage_panel_px,
        predict_overrides=list(settings.predict_overrides),
        evaluate_overrides=list(settings.evaluate_overrides))
    print(result.table)
    incomplete = sum(not r.complete for r in result.runs)
    if incomplete:
        print(f"\n{incomplete} incomplete run(s): no {METRICS_FILE}")
    print()
    for path in result.files:
        print(f"wrote {path}")
    return result
