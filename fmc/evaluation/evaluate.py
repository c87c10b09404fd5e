"""``python -m fmc.evaluate``: score predictions or baselines with the challenge's N_SSIM.

The command's settings (``conf/evaluate.yaml``) are read once into :class:`EvaluateSettings`;
the scoring itself is in :mod:`fmc.evaluation.scoring`.
``iou=proxy|cellpose`` adds an N_IoU-like segmentation score (:mod:`fmc.evaluation.iou`; not the
challenge's N_IoU, whose verified segmentations are not public).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmc import __version__
from fmc.core.config_values import flag, optional_path, whole_number
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import writable_folder, write_text_atomic
from fmc.evaluation.iou import IOU_SETTINGS
from fmc.evaluation.metrics import METRIC_SETTINGS
from fmc.evaluation.pairs import (
    Method,
    check_predictions,
    find_pairs,
    gaussian_label,
    parse_sigma,
    restrict_to_list,
)
from fmc.evaluation.scoring import (
    EvaluationResult,
    best_per_content,
    format_table,
    score_pair,
    summarize,
    write_tables,
)
from fmc.evaluation.segmentation import IOU_CHOICES, make_segmenter

log = logging.getLogger("fmc.evaluate")

WHERE = "conf/evaluate.yaml"
TABLES = ("auto", "full", "content")
BASELINES = ("identity", "gaussian")


def _plain(value: Any) -> Any:
    """A config node as plain Python (a ``ListConfig`` as a list), any other value as it is."""
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


@dataclass(frozen=True)
class EvaluateSettings:
    """What ``fmc.evaluate`` does: the keys of ``conf/evaluate.yaml`` (the one home of their
    defaults), read once by :meth:`from_config`. ``verbose`` is read by :mod:`fmc.core.logs`.

    Attributes
    ----------
    input : Path or None
        Folder of raw pairs; None: the embedded synthetic dataset.
    split_list : Path or None
        Only the images of this split list; None: every pair of ``input``.
    prediction : Path or None
        Folder of predictions named like the angle files.
    output : Path or None
        Where the tables go; None: this run's Hydra folder.
    baseline : tuple of str
        ``identity`` and/or ``gaussian`` (lower case), possibly none.
    sigma : tuple of 3 floats or str
        Gaussian σ in voxels (ZYX), or ``"sweep"`` (every value of ``sigma_sweep``).
    sigma_sweep : tuple of (3 floats)
        The σ values tried with ``sigma="sweep"``.
    slab, block_y : int
        Z-planes and rows of the chunked metric computed at a time.
    table : str
        ``auto``, ``full`` or ``content``: the printed table.
    progress : bool
        Progress bar over images.
    iou : str
        ``none``, ``proxy`` or ``cellpose`` (lower case): the segmentation score.
    iou_max_voxels : int or None
        Isotropic voxels segmented at most per volume; None: no cap.
    """

    input: Path | None
    split_list: Path | None
    prediction: Path | None
    output: Path | None
    baseline: tuple[str, ...]
    sigma: tuple[float, float, float] | str
    sigma_sweep: tuple[tuple[float, float, float], ...]
    slab: int
    block_y: int
    table: str
    progress: bool
    iou: str
    iou_max_voxels: int | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EvaluateSettings:
        """The settings of a composed ``conf/evaluate.yaml`` config; the folders are read by
        :func:`evaluate`.

        Raises
        ------
        FmcConfigError
            One line naming the first key whose value cannot be used.
        """
        if str(cfg.table) not in TABLES:
            raise FmcConfigError(f"table={cfg.table}: choose auto, full or content ({WHERE})")
        slab = whole_number(cfg.slab, "slab", 1, WHERE)
        block_y = whole_number(cfg.block_y, "block_y", 1, WHERE)
        baseline = () if cfg.baseline is None else tuple(
            str(b).lower() for b in (cfg.baseline if OmegaConf.is_list(cfg.baseline)
                                     else [cfg.baseline]))
        if any(b not in BASELINES for b in baseline):
            raise FmcConfigError(f"baseline={cfg.baseline}: choose identity, gaussian or "
                                 f"[identity,gaussian] ({WHERE})")
        sweep = isinstance(cfg.sigma, str) and cfg.sigma.lower() == "sweep"
        iou = "none" if cfg.iou is None else str(cfg.iou).strip().lower()
        if iou not in IOU_CHOICES:
            raise FmcConfigError(f"iou={cfg.iou}: choose none, proxy or cellpose ({WHERE})")
        return cls(input=optional_path(cfg.input), split_list=optional_path(cfg.split_list),
                   prediction=optional_path(cfg.prediction), output=optional_path(cfg.output),
                   baseline=baseline,
                   sigma="sweep" if sweep else parse_sigma(_plain(cfg.sigma)),
                   sigma_sweep=tuple(parse_sigma(_plain(v)) for v in cfg.sigma_sweep or ()),
                   slab=slab, block_y=block_y, table=str(cfg.table),
                   progress=flag(cfg.progress, "progress", WHERE), iou=iou,
                   iou_max_voxels=_iou_max_voxels(cfg.iou_max_voxels))

    def gaussian_sigmas(self) -> tuple[tuple[float, float, float], ...]:
        """The σ (ZYX, voxels) of the Gaussian baselines: ``sigma``, or ``sigma_sweep``."""
        return self.sigma_sweep if self.sigma == "sweep" else (self.sigma,)


def _iou_max_voxels(value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise FmcConfigError(f"iou_max_voxels={value}: give a positive number of voxels or null "
                             f"({WHERE})")
    return number


def build_methods(settings: EvaluateSettings) -> list[Method]:
    """The prediction folder and/or baselines to score.

    Raises
    ------
    FmcInputError
        If the prediction folder does not exist.
    FmcConfigError
        If there is nothing to score.
    """
    methods = []
    if settings.prediction is not None:
        folder = settings.prediction
        if not folder.is_dir():
            raise FmcInputError(f"{folder}: prediction folder does not exist (prediction=...)")
        methods.append(Method("prediction", "prediction", folder=folder))
    for baseline in settings.baseline:
        if baseline == "identity":
            methods.append(Method("identity", "identity"))
        else:
            methods.extend(Method("gaussian", gaussian_label(sigma_zyx), sigma_zyx=sigma_zyx)
                           for sigma_zyx in settings.gaussian_sigmas())
    if not methods:
        raise FmcConfigError("nothing to score: give prediction=DIR (predictions named like the angle "
                             "files) or baseline=identity|gaussian")
    return methods


def build_iou_backend(settings: EvaluateSettings):
    """The segmentation backend of ``settings.iou``, or None for ``none`` (the default).

    Raises
    ------
    FmcConfigError
        For ``cellpose`` when cellpose is not installed.
    """
    return None if settings.iou == "none" else make_segmenter(settings.iou)


def input_folder(settings: EvaluateSettings) -> Path:
    """``settings.input`` (the raw pairs), or the embedded synthetic dataset when it is None."""
    from fmc.preprocessing.embedded import raw_root_or_embedded

    return raw_root_or_embedded(settings.input)


def output_folder(settings: EvaluateSettings) -> Path:
    """``settings.output``, or this run's Hydra output folder."""
    if settings.output is not None:
        return settings.output
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def evaluate(settings: EvaluateSettings) -> EvaluationResult:
    """Score every raw pair with every method of ``settings`` and write the tables.

    Parameters
    ----------
    settings : EvaluateSettings
        What to score and how (:meth:`EvaluateSettings.from_config` of ``conf/evaluate.yaml``).

    Returns
    -------
    EvaluationResult
        The per-image rows and the summary.
    """
    methods = build_methods(settings)
    iou_backend = build_iou_backend(settings)
    pairs = find_pairs(input_folder(settings))
    if settings.split_list is not None:
        pairs = restrict_to_list(pairs, settings.split_list)
    # Proved writable before scoring, which can take hours, rather than when the tables are due.
    out_dir = writable_folder(output_folder(settings), "output")
    check_predictions(pairs, methods)
    result = EvaluationResult(iou_backend=None if iou_backend is None else iou_backend.name)
    for pair in _progress(pairs, enabled=settings.progress):
        result.rows.extend(score_pair(pair, methods, slab=settings.slab, block_y=settings.block_y,
                                      iou_backend=iou_backend,
                                      iou_max_voxels=settings.iou_max_voxels))
    result.summary = summarize(result.rows)
    per_image, summary = write_tables(out_dir, result)
    metrics = {"metric": METRIC_SETTINGS}
    if iou_backend is not None:
        metrics["iou_metric"] = (f"{iou_backend.name} segmentation; {IOU_SETTINGS}; not the "
                                 "challenge's N_IoU")
    write_text_atomic(out_dir / "evaluate.json", json.dumps({
        **metrics, "fmc_version": __version__, "python": platform.python_version(),
        "config": asdict(settings), "methods": [m.label for m in methods],
        "n_pairs": len(pairs)}, indent=2, default=str))
    full = settings.table == "full" or (settings.table == "auto" and len(methods) <= 2)
    print(format_table(result.summary if full else
                       [row for row in result.summary if row["study"] == "all"],
                       iou_backend=result.iou_backend))
    if not full:
        print(f"(per study × content rows in {summary})")
    if len(methods) > 1:
        print("\nbest per content (mean N_SSIM over all images):")
        for row in best_per_content(result.summary):
            print(f"  {row['content']}: {row['method']}  N_SSIM {row['mean_n_ssim']:+.4f}")
    missing = sum(r.status == "missing" for r in result.rows)
    if missing:
        log.warning("%d prediction(s) missing: listed in %s with status 'missing', not in the "
                    "means", missing, per_image)
    print(f"\nmetric: {METRIC_SETTINGS}")
    if iou_backend is not None:
        print(f"N_IoU({iou_backend.name}) is NOT the challenge's N_IoU: {iou_backend.name} "
              f"segmentation; {IOU_SETTINGS}")
    print(f"wrote {per_image}\nwrote {summary}")
    return result


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="scoring", unit="image", file=sys.stderr, leave=False)
