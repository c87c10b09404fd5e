"""Finding the run folders of a sweep and reading what each holds.

A run folder is a ``python -m fmc.train`` Hydra run folder (``metrics.json``, ``checkpoints/``,
``.hydra/config.yaml``); its whole-volume test scores are ``fmc.evaluate``'s table in
``<run>/test_scores/summary.csv``. :class:`RunReport` is what :mod:`fmc.reporting.report` knows
about one run.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcInputError
from fmc.core.files import natural_key
from fmc.core.locations import resolve_latest
from fmc.core.naming import METRICS_FILE

SCORES_DIR = "test_scores"
PREDICTIONS_DIR = "test_predictions"
_GAUSSIAN_LABEL = re.compile(r"^gaussian\(sigma=(?P<sigma>.+)\)$")


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
    """Everything the report knows about one run folder.

    ``label`` names the run inside its sweep (``0``); ``sweep`` names the sweep when the report
    covers several (else ''), and :attr:`name` is the two together.
    """

    folder: Path
    label: str
    sweep: str = ""
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
    def name(self) -> str:
        """The run's name across sweeps: ``<sweep>/<label>``, or ``label`` with one sweep."""
        return f"{self.sweep}/{self.label}" if self.sweep else self.label

    @property
    def complete(self) -> bool:
        """True when training finished (``metrics.json`` exists and is readable)."""
        return self.metrics is not None

    def row(self) -> dict[str, Any]:
        """One row of ``report.csv`` (numbers as floats, NaN when unknown)."""
        metrics = self.metrics or {}
        scores = self.scores or WholeVolumeScores()
        return {
            "sweep": self.sweep, "run": self.label, "folder": str(self.folder), "run_name": self.run_name,
            "status": self.status, "study": self.study, "content": self.content,
            "channels": self.channels, "loss": self.loss, "varied": self.varied,
            "selection": metrics.get("selection") or "val/n_ssim",
            "val_n_ssim": as_number(metrics.get("best/val_n_ssim")),
            "test_n_ssim": scores.model,
            "test_worst_n_ssim": as_number(metrics.get("test/n_ssim/worst")),
            "identity_n_ssim": scores.identity,
            "gaussian_n_ssim": scores.gaussian, "gaussian_sigma": scores.gaussian_sigma,
            "model_minus_gaussian": scores.model - scores.gaussian,
            "n_test": scores.n_images if self.scores else "",
            "n_test_scored": scores.n_scored if self.scores else "",
            "checkpoint": "" if self.checkpoint is None else str(self.checkpoint),
            "epochs": metrics.get("epochs", ""), "global_step": metrics.get("global_step", ""),
        }


def as_number(value: Any) -> float:
    """``value`` as a float, NaN when it is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


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
    sweep = resolve_latest(sweep, "sweep")
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


def config_value(cfg, key: str) -> Any:
    """``cfg.<key>`` resolved, or None when absent or not resolvable."""
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is just an unknown value
        return None


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
        pairs = [(as_number(r["mean_n_ssim"]), int(r["n_scored"] or 0)) for r in method_rows]
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
    """Where the raw TIFFs of a run's H5 folder are, when ``input=`` is not given.

    ``data.root`` null: the embedded synthetic dataset (``$FMC_DATA/synthetic``). Otherwise
    ``fmc.prepare``'s default naming (``<raw>_h5`` beside ``<raw>``) is undone; None when that
    folder does not exist.
    """
    if data_root is None:
        from fmc.core.locations import embedded_tiff_dir

        return embedded_tiff_dir()
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
    listed = config_value(run_cfg, "data.test_list")
    if listed is None:
        raise FmcInputError("the run's .hydra/config.yaml names no data.test_list")
    from fmc.preprocessing.embedded import h5_root_or_embedded

    root = h5_root_or_embedded(config_value(run_cfg, "data.root"))
    from fmc.data.datamodule import resolve_list

    return resolve_list(str(listed), root)

