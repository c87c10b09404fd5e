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
Gaussian per run) and ``report_montage.png`` (max projections, see :mod:`fmc.reporting.montage`).
A run without ``metrics.json`` (training not finished, or failed) is listed as incomplete.

Everything here but :func:`main` works without Hydra: :func:`build_report` takes plain values.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import natural_key, write_text_atomic
from fmc.models.checkpoint import best_checkpoint_in

log = logging.getLogger("fmc.report")

METRICS_FILE = "metrics.json"
SCORES_DIR = "test_scores"
PREDICTIONS_DIR = "test_predictions"
# Written by this command beside the scores (the checkpoint and list they came from) and the
# predictions (the checkpoint file they came from).
PROVENANCE_FILE = "report_evaluation.json"
REPORT_COLUMNS = ["run", "folder", "run_name", "status", "study", "content", "channels", "loss",
                  "varied", "selection", "val_n_ssim", "test_n_ssim", "test_worst_n_ssim",
                  "identity_n_ssim", "gaussian_n_ssim",
                  "gaussian_sigma", "model_minus_gaussian", "n_test", "n_test_scored",
                  "checkpoint", "epochs", "global_step"]
_GAUSSIAN_LABEL = re.compile(r"^gaussian\(sigma=(?P<sigma>.+)\)$")
# Hydra override values that need no quoting.
_PLAIN_VALUE = re.compile(r"[\w./:+@-]+")


@dataclass
class WholeVolumeScores:
    """A run's whole-volume test scores, read from ``fmc.evaluate``'s ``summary.csv``.

    Attributes
    ----------
    model, identity, gaussian : float
        Mean N_SSIM over the scored test volumes (NaN when that method was not scored);
        ``gaussian`` is the best σ's.
    gaussian_sigma : str
        The best σ in voxels as evaluate labels it (``0.5`` or ``[0.2,0.5,0.5]``), or ''.
    n_images, n_scored : int
        Test volumes listed, and those with a prediction.
    """

    model: float = math.nan
    identity: float = math.nan
    gaussian: float = math.nan
    gaussian_sigma: str = ""
    n_images: int = 0
    n_scored: int = 0


@dataclass
class RunReport:
    """Everything the report knows about one run folder."""

    folder: Path
    label: str
    metrics: dict[str, Any] | None = None
    status: str = "ok"
    study: str = ""
    content: str = ""
    channels: str = ""
    loss: str = ""
    run_name: str = ""
    checkpoint: Path | None = None
    scores: WholeVolumeScores | None = None
    first_test_image: str | None = None
    raw: Path | None = None
    overrides: list[str] = field(default_factory=list)
    varied: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when training finished (``metrics.json`` exists and is readable)."""
        return self.metrics is not None

    def row(self) -> dict[str, Any]:
        """One row of ``report.csv`` (numbers as floats, NaN when unknown)."""
        metrics = self.metrics or {}
        scores = self.scores or WholeVolumeScores()
        return {
            "run": self.label, "folder": str(self.folder), "run_name": self.run_name,
            "status": self.status, "study": self.study, "content": self.content,
            "channels": self.channels, "loss": self.loss, "varied": self.varied,
            "selection": metrics.get("selection") or "val/n_ssim",
            "val_n_ssim": _number(metrics.get("best/val_n_ssim")),
            "test_n_ssim": scores.model,
            "test_worst_n_ssim": _number(metrics.get("test/n_ssim/worst")),
            "identity_n_ssim": scores.identity,
            "gaussian_n_ssim": scores.gaussian, "gaussian_sigma": scores.gaussian_sigma,
            "model_minus_gaussian": scores.model - scores.gaussian,
            "n_test": scores.n_images if self.scores else "",
            "n_test_scored": scores.n_scored if self.scores else "",
            "checkpoint": "" if self.checkpoint is None else str(self.checkpoint),
            "epochs": metrics.get("epochs", ""), "global_step": metrics.get("global_step", ""),
        }


@dataclass
class ReportResult:
    """What :func:`build_report` produced."""

    runs: list[RunReport]
    files: list[Path]
    table: str


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


# ----------------------------------------------------------------------------------------------
# Finding runs and what they hold
# ----------------------------------------------------------------------------------------------
def is_run_folder(path: Path) -> bool:
    """True for a training run folder (or one that started: config or checkpoints written)."""
    return path.is_dir() and any((path / name).exists() for name in
                                 (METRICS_FILE, ".hydra/config.yaml", "checkpoints"))


def find_runs(sweep: str | Path) -> list[Path]:
    """The run folders of a multirun sweep folder (``0/``, ``1/``, ... in natural order).

    A run folder given as ``sweep`` is its own one-run sweep.

    Raises
    ------
    FmcInputError
        If the folder does not exist or holds no run folder.
    """
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise FmcInputError(f"sweep={sweep}: no such folder (give the multirun folder of "
                            "python -m fmc.train --multirun, e.g. outputs/train/multirun/<date>)")
    if (sweep / METRICS_FILE).is_file() or (sweep / ".hydra" / "config.yaml").is_file():
        return [sweep]
    runs = sorted((p for p in sweep.iterdir() if is_run_folder(p)), key=lambda p: natural_key(p.name))
    if not runs:
        raise FmcInputError(f"sweep={sweep}: no run folder in it (expected numbered folders 0/, 1/, "
                            f"... holding {METRICS_FILE}, .hydra/config.yaml or checkpoints/)")
    return runs


def read_metrics(run: Path) -> dict[str, Any] | None:
    """The run's ``metrics.json``, or None when it is missing.

    Raises
    ------
    FmcInputError
        If the file exists but is not a JSON object.
    """
    path = run / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FmcInputError(f"{path}: not readable as JSON ({error})") from None
    if not isinstance(metrics, dict):
        raise FmcInputError(f"{path}: expected a JSON object")
    return metrics


def read_run_overrides(run: Path) -> list[str]:
    """The command-line overrides the run was started with (``.hydra/overrides.yaml``)."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # noqa: BLE001 - an unreadable file is just unknown overrides
        return []


def varied_overrides(overrides: Sequence[Sequence[str]]) -> list[str]:
    """Per run, its overrides that not every run shares (what an ablation varied)."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [" ".join(o for o in run if o not in common) for run in overrides]


def read_run_config(run: Path):
    """The run's composed training config (``.hydra/config.yaml``), or None when absent."""
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    import fmc.core.cli  # noqa: F401 - registers the lists_prefix resolver the config uses

    return OmegaConf.load(path)


def _config_value(cfg, key: str) -> Any:
    """``cfg.<key>`` resolved, or None when absent or not resolvable."""
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is just an unknown value
        return None


def best_checkpoint(run: Path, metrics: dict[str, Any] | None) -> Path | None:
    """The checkpoint to test: the best one recorded in ``metrics.json``, else the highest
    ``nssim`` in a file name of ``checkpoints/``, else ``checkpoints/last.ckpt``.

    The recorded path may be relative to where training ran, or the sweep may have moved:
    the same file name inside this run's ``checkpoints/`` is used then.
    """
    folder = run / "checkpoints"
    recorded = (metrics or {}).get("best/checkpoint")
    if recorded:
        recorded = Path(str(recorded))
        for candidate in (recorded, folder / recorded.name):
            if candidate.is_file():
                return candidate
    return best_checkpoint_in(folder)


def read_test_scores(scores_dir: Path, content: str | None = None) -> WholeVolumeScores | None:
    """Mean test N_SSIM of the model and baselines from ``summary.csv`` (None when absent).

    Only the rows over all studies (``study == all``) are used; when the run's ``content`` is
    among them only its rows count, otherwise every content's, weighted by scored images.

    Raises
    ------
    FmcInputError
        If ``summary.csv`` lacks evaluate's columns.
    """
    path = scores_dir / "summary.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needed = {"content", "study", "method", "n_images", "n_scored", "mean_n_ssim"}
    if rows and not needed <= set(rows[0]):
        raise FmcInputError(f"{path}: not an fmc.evaluate summary (columns "
                            f"{', '.join(sorted(needed - set(rows[0])))} missing)")
    rows = [r for r in rows if r["study"] == "all"]
    if content and any(r["content"] == content for r in rows):
        rows = [r for r in rows if r["content"] == content]
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)

    def mean(method_rows: list[dict]) -> float:
        pairs = [(_number(r["mean_n_ssim"]), int(r["n_scored"] or 0)) for r in method_rows]
        pairs = [(v, n) for v, n in pairs if math.isfinite(v) and n > 0]
        total = sum(n for _, n in pairs)
        return sum(v * n for v, n in pairs) / total if total else math.nan

    scores = WholeVolumeScores()
    if "prediction" in by_method:
        scores.model = mean(by_method["prediction"])
    if "identity" in by_method:
        scores.identity = mean(by_method["identity"])
    for method, method_rows in by_method.items():
        match = _GAUSSIAN_LABEL.match(method)
        value = mean(method_rows)
        if match and math.isfinite(value) and not value <= scores.gaussian:
            scores.gaussian, scores.gaussian_sigma = value, match["sigma"]
    counted = by_method.get("prediction") or next(iter(by_method.values()), [])
    scores.n_images = sum(int(r["n_images"] or 0) for r in counted)
    scores.n_scored = sum(int(r["n_scored"] or 0) for r in counted)
    return scores


def first_scored_image(scores_dir: Path) -> str | None:
    """The first test image named in ``per_image.csv`` (evaluate keeps the split list's order)."""
    path = scores_dir / "per_image.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("file"):
                return row["file"]
    return None


def default_raw_folder(data_root: Any) -> Path | None:
    """Where the raw TIFFs of a run's H5 folder are, when ``raw=`` is not given.

    ``data.root`` null: the embedded synthetic dataset (``data/synthetic``). Otherwise
    ``fmc.prepare``'s default naming (``<raw>_h5`` beside ``<raw>``) is undone; None when that
    folder does not exist.
    """
    if data_root is None:
        from fmc.simulation.synth import DEFAULT_ROOT

        return DEFAULT_ROOT
    root = Path(str(data_root))
    if root.name.endswith("_h5"):
        candidate = root.with_name(root.name[:-3])
        if candidate.is_dir():
            return candidate
    return None


def run_test_list(run_cfg) -> Path:
    """The run's test split list: ``data.test_list`` looked up under ``data.root`` as training
    did (``data.root`` null: the embedded dataset, prepared if needed).

    Raises
    ------
    FmcInputError
        If the run has no config or the list is not found.
    """
    listed = _config_value(run_cfg, "data.test_list")
    if listed is None:
        raise FmcInputError("the run's .hydra/config.yaml names no data.test_list")
    root = _config_value(run_cfg, "data.root")
    if root is None:
        from fmc.preprocessing.conversion import prepare_default_dataset

        root = prepare_default_dataset()
    from fmc.data.datamodule import resolve_list

    return resolve_list(str(listed), root)


# ----------------------------------------------------------------------------------------------
# Scoring a run that has no test scores yet
# ----------------------------------------------------------------------------------------------
def hydra_override(key: str, value: Any) -> str:
    """``key=value`` for a Hydra command line, quoting values with spaces, commas or quotes."""
    text = str(value)
    if _PLAIN_VALUE.fullmatch(text):
        return f"{key}={text}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def evaluation_commands(run: Path, checkpoint: Path, split_list: Path, raw: Path | None,
                        predict_overrides: Sequence[str] = (),
                        evaluate_overrides: Sequence[str] = ()) -> list[list[str]]:
    """The ``fmc.predict`` and ``fmc.evaluate`` command lines that score ``run`` on its test list.

    Their Hydra folders are the output folders themselves, so each keeps its config and log.
    """
    predictions, scores = run / PREDICTIONS_DIR, run / SCORES_DIR
    predict = [sys.executable, "-m", "fmc.predict", hydra_override("ckpt", checkpoint),
               hydra_override("input", split_list), hydra_override("output", predictions),
               "progress=false", hydra_override("hydra.run.dir", predictions),
               *predict_overrides]
    evaluate = [sys.executable, "-m", "fmc.evaluate",
                *([] if raw is None else [hydra_override("raw", raw)]),
                hydra_override("pred", predictions), hydra_override("split_list", split_list),
                "baseline=[identity,gaussian]", "sigma=sweep", hydra_override("out", scores),
                "progress=false", hydra_override("hydra.run.dir", scores), *evaluate_overrides]
    return [predict, evaluate]


def _checkpoint_stamp(checkpoint: Path) -> dict[str, Any]:
    stat = checkpoint.stat()
    return {"checkpoint": str(checkpoint.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def _predictions_reusable(predictions: Path, split_list: Path, checkpoint: Path) -> bool:
    # Predictions this command wrote earlier from the same checkpoint file, all present: a run
    # whose evaluation failed after prediction is not predicted again. Anything else (another or
    # a rewritten checkpoint, files missing) is predicted anew.
    from fmc.preprocessing.splits import read_list

    try:
        stamp = json.loads((predictions / PROVENANCE_FILE).read_text(encoding="utf-8"))
        angles = [angle for angle, _ in read_list(split_list)]
    except (OSError, ValueError, FmcInputError):
        return False
    return stamp == _checkpoint_stamp(checkpoint) and bool(angles) and \
        all((predictions / f"{Path(a).stem}.tif").is_file() for a in angles)


def evaluate_run(report: RunReport, raw: Path | None, predict_overrides: Sequence[str] = (),
                 evaluate_overrides: Sequence[str] = ()) -> None:
    """Predict and score ``report``'s test split with the real commands; on failure the run's
    status says why (the sweep's other runs still get reported).
    """
    if report.checkpoint is None:
        report.status = "no checkpoint to evaluate"
        return
    try:
        split_list = run_test_list(read_run_config(report.folder))
    except FmcInputError as error:
        report.status = f"not evaluated: {error}"
        return
    predictions = report.folder / PREDICTIONS_DIR
    predict, evaluate = evaluation_commands(report.folder, report.checkpoint, split_list, raw,
                                            predict_overrides, evaluate_overrides)
    if _predictions_reusable(predictions, split_list, report.checkpoint):
        log.info("%s: reusing the predictions in %s", report.label, predictions)
    elif not _run_step(report, predict):
        return
    else:
        write_text_atomic(predictions / PROVENANCE_FILE,
                          json.dumps(_checkpoint_stamp(report.checkpoint), indent=2) + "\n")
    if _run_step(report, evaluate):
        write_text_atomic(report.folder / SCORES_DIR / PROVENANCE_FILE, json.dumps(
            {"checkpoint": str(report.checkpoint), "split_list": str(split_list),
             "raw": None if raw is None else str(raw)}, indent=2) + "\n")


def _run_step(report: RunReport, command: list[str]) -> bool:
    """Run one command; False (and the run's status set to its error line) when it fails."""
    log.info("%s: %s", report.label, " ".join(command[1:]))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return True
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    report.status = f"evaluation failed ({command[2]}): {lines[-1] if lines else '?'}"
    log.warning("%s: %s", report.label, report.status)
    return False


def _recorded_checkpoint(scores_dir: Path) -> Path | None:
    path = scores_dir / PROVENANCE_FILE
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------
def inspect_run(folder: Path, label: str, raw: str | Path | None = None,
                evaluate_missing: bool = False, predict_overrides: Sequence[str] = (),
                evaluate_overrides: Sequence[str] = ()) -> RunReport:
    """Gather one run's facts and test scores (scoring it first if asked and needed)."""
    report = RunReport(folder=folder, label=label)
    try:
        report.metrics = read_metrics(folder)
    except FmcInputError as error:
        report.status = f"incomplete: {error}"
    cfg = read_run_config(folder)
    metrics = report.metrics or {}
    for key, config_key in (("study", "study"), ("content", "content"),
                            ("channels", "channels.name"), ("loss", "loss.name"),
                            ("run_name", "run_name")):
        value = metrics.get(key, _config_value(cfg, config_key))
        setattr(report, key, "" if value is None else str(value))
    if not report.complete and report.status == "ok":
        report.status = f"incomplete: no {METRICS_FILE} (training not finished?)"
    if raw is not None:
        report.raw = Path(raw)
    elif cfg is not None:
        report.raw = default_raw_folder(_config_value(cfg, "data.root"))
    report.checkpoint = best_checkpoint(folder, report.metrics)
    scores_dir = folder / SCORES_DIR
    if not (scores_dir / "summary.csv").is_file():
        data_root = _config_value(cfg, "data.root")
        if not report.complete:
            pass  # an unfinished run is not scored: its checkpoints are still changing
        elif not evaluate_missing:
            report.status = f"not evaluated (no {SCORES_DIR}/summary.csv, evaluate_missing=false)"
        elif cfg is None:
            report.status = "not evaluated: no .hydra/config.yaml to find the test split in"
        elif raw is None and data_root is not None and report.raw is None:
            report.status = f"not evaluated: give raw=DIR, the raw TIFFs of data.root={data_root}"
        else:
            # A run trained on the embedded dataset is scored against evaluate's own default.
            evaluate_run(report, None if raw is None and data_root is None else report.raw,
                         predict_overrides, evaluate_overrides)
    report.scores = read_test_scores(scores_dir, report.content or None)
    report.overrides = read_run_overrides(folder)
    if report.scores is None and math.isfinite(_number(metrics.get("test/n_ssim"))):
        # Training scored its test volumes itself (the same metric as fmc.evaluate, no baselines).
        count = len(metrics.get("test/volumes") or {})
        report.scores = WholeVolumeScores(model=_number(metrics["test/n_ssim"]), n_images=count,
                                          n_scored=count)
        if report.status.startswith("not evaluated"):
            report.status = "ok"
    elif report.scores is not None:
        report.checkpoint = _recorded_checkpoint(scores_dir) or report.checkpoint
        report.first_test_image = first_scored_image(scores_dir)
    return report


def _labels(folders: Sequence[Path], sweep: Path | None) -> list[str]:
    """Short, distinct run names: the folder's name (``0``), its parent's too when ambiguous."""
    names = [p.name if sweep is None or p == sweep else str(p.relative_to(sweep))
             if p.is_relative_to(sweep) else p.name for p in folders]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in folders]


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def montage_choices(runs: Sequence[RunReport], images: Sequence[str] | None, limit: int) -> list:
    """The :class:`fmc.reporting.montage.MontageImage` list: ``images`` (file names) for every run that
    predicted them, or each run's first test image; at most ``limit``. Images whose
    prediction, input or target file is missing are skipped (logged).
    """
    from fmc.reporting.montage import MontageImage

    chosen = []
    for run in runs:
        predictions = run.folder / PREDICTIONS_DIR
        wanted = list(images) if images else [run.first_test_image] if run.first_test_image else []
        for name in wanted:
            name = name if name.lower().endswith((".tif", ".tiff")) else f"{name}.tif"
            files = {"prediction": predictions / name,
                     "input": run.raw / name if run.raw is not None else None,
                     "target": run.raw / re.sub(r"_angle(?=\.tiff?$)", "_fused", name,
                                                flags=re.IGNORECASE) if run.raw else None}
            missing = [k for k, p in files.items() if p is None or not p.is_file()]
            if missing:
                if not images or files["prediction"].is_file():
                    log.warning("montage: %s %s skipped, no %s file (%s)", run.label, name,
                                " or ".join(missing), ", ".join(str(files[k]) for k in missing))
                continue
            chosen.append(MontageImage(f"run {run.label}: {name}", files["input"],
                                       files["prediction"], files["target"]))
    if len(chosen) > limit:
        log.info("montage: showing %d of %d images (montage_max_images=%d)", limit, len(chosen),
                 limit)
    return chosen[:limit]


def write_figures(runs: Sequence[RunReport], out: Path, montage: bool = True,
                  images: Sequence[str] | None = None, max_images: int = 4,
                  panel_px: int = 192) -> list[Path]:
    """Write ``report_nssim.png`` (runs with test scores) and ``report_montage.png``."""
    from fmc.reporting.montage import Bar, write_bar_chart, write_montage

    written = []
    bars = [Bar(f"{r.label}\n{_short(r)}", r.scores.model, r.scores.gaussian) for r in runs
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
                        "go to <run>/%s; input and target are read from raw=)", PREDICTIONS_DIR)
    return written


def _short(run: RunReport) -> str:
    study = run.study if run.study in ("", "all") else f"S{run.study}"
    return " ".join(x for x in (study, run.content) if x)


# ----------------------------------------------------------------------------------------------
# The whole report
# ----------------------------------------------------------------------------------------------
def build_report(sweep: str | Path | None = None, runs: Sequence[str | Path] = (),
                 out: str | Path | None = None, raw: str | Path | None = None,
                 evaluate_missing: bool = True, montage: bool = True,
                 montage_images: Sequence[str] | None = None, montage_max_images: int = 4,
                 montage_panel_px: int = 192, predict_overrides: Sequence[str] = (),
                 evaluate_overrides: Sequence[str] = ()) -> ReportResult:
    """Report on the runs of ``sweep`` and/or the run folders ``runs``; write the files to
    ``out`` (default: the sweep folder).

    Returns
    -------
    ReportResult
        The runs, the files written and the printed table.

    Raises
    ------
    FmcInputError
        If a folder does not exist or the sweep holds no run.
    FmcConfigError
        If neither ``sweep`` nor ``runs`` is given, or ``out`` is missing without a sweep.
    """
    if sweep is None and not runs:
        raise FmcConfigError("nothing to report on: give sweep=DIR (a multirun folder of "
                             "python -m fmc.train) or runs=[RUN_DIR,...]")
    if int(montage_max_images) < 1 or int(montage_panel_px) < 16:
        raise FmcConfigError("montage_max_images must be >= 1 and montage_panel_px >= 16 "
                             "(conf/report.yaml)")
    folders = find_runs(sweep) if sweep is not None else []
    for run in runs:
        if not Path(run).is_dir():
            raise FmcInputError(f"runs: {run} is not a folder")
        folders.append(Path(run))
    folders = list(dict.fromkeys(folders))
    if out is None and sweep is None:
        raise FmcConfigError("out=DIR is needed with runs=[...] (with sweep=DIR the report goes "
                             "into the sweep folder)")
    out = Path(out) if out is not None else Path(sweep)
    labels = _labels(folders, Path(sweep) if sweep is not None else None)
    reports = [inspect_run(folder, label, raw, evaluate_missing, predict_overrides,
                           evaluate_overrides) for folder, label in zip(folders, labels, strict=True)]
    for report, varied in zip(reports, varied_overrides([r.overrides for r in reports]),
                              strict=True):
        report.varied = varied
    rows = [r.row() for r in reports]
    table = format_report_table(rows)
    files = [write_text_atomic(out / "report.csv", csv_text(rows))]
    figures = write_figures(reports, out, montage, montage_images, int(montage_max_images),
                            int(montage_panel_px))
    loso = _loso_section(reports, out)
    if loso is not None:
        table += "\n\nLeave one study out (N_SSIM on the held-out study's volumes):\n" + loso[0]
        figures.append(loso[1])
    files.insert(0, write_text_atomic(out / "report.md", _markdown(reports, rows, sweep, figures,
                                                                   loso)))
    files += figures
    return ReportResult(reports, files, table)


def _loso_section(reports: Sequence[RunReport], out: Path) -> tuple[str, Path] | None:
    """The leave-one-study-out table and figure of the runs trained with ``holdout``."""
    from fmc.reporting.loso import held_out_scores, loso_markdown, loso_rows, write_loso_figure

    scores = [s for s in (held_out_scores(r.label, r.metrics) for r in reports) if s is not None]
    if not scores:
        return None
    rows = loso_rows(scores)
    return loso_markdown(rows), write_loso_figure(rows, out / "report_loso.png")


def _markdown(reports: Sequence[RunReport], rows, sweep, figures: Sequence[Path],
              loso: tuple[str, Path] | None = None) -> str:
    from fmc.evaluation.metrics import METRIC_SETTINGS

    source = f"sweep `{sweep}`" if sweep is not None else f"{len(reports)} run folder(s)"
    parts = [f"# Training report: {source}", "",
             "- **varied**: the run's command-line overrides that not every run shares.",
             "- **val N_SSIM**: best validation score during training (`metrics.json`): whole "
             "validation volumes by the challenge metric, or the patch proxy where marked "
             "(patch).",
             f"- **test N_SSIM**: mean over whole test volumes of the run's split, from "
             f"`<run>/{SCORES_DIR}/summary.csv` (`fmc.evaluate`), else from the run's own "
             "end-of-training scoring (`metrics.json` `test/n_ssim`, the same metric); worst "
             "test volume from `metrics.json`; identity is 0 by definition; best Gaussian is "
             "the best σ (voxels) of evaluate's sweep.",
             f"- metric: {METRIC_SETTINGS}", "", markdown_table(rows), ""]
    if loso is not None:
        parts += ["## Leave one study out", "",
                  "Runs trained with `holdout=K`: trained and selected on the other studies, "
                  "tested on all of study K's volumes (`metrics.json` `test/volumes`).", "",
                  loso[0], ""]
    incomplete = [r for r in reports if not r.complete]
    if incomplete:
        parts += [f"Incomplete runs (no `{METRICS_FILE}`): "
                  + ", ".join(f"`{r.label}`" for r in incomplete), ""]
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


def run(cfg) -> ReportResult:
    """Build the report from the Hydra config (see ``conf/report.yaml``) and print it."""
    result = build_report(
        sweep=cfg.sweep, runs=_as_list(cfg.runs), out=cfg.out, raw=cfg.raw,
        evaluate_missing=bool(cfg.evaluate_missing), montage=bool(cfg.montage),
        montage_images=_as_list(cfg.montage_images) or None,
        montage_max_images=int(cfg.montage_max_images), montage_panel_px=int(cfg.montage_panel_px),
        predict_overrides=_as_list(cfg.predict_overrides),
        evaluate_overrides=_as_list(cfg.evaluate_overrides))
    print(result.table)
    incomplete = sum(not r.complete for r in result.runs)
    if incomplete:
        print(f"\n{incomplete} incomplete run(s): no {METRICS_FILE}")
    print()
    for path in result.files:
        print(f"wrote {path}")
    return result
