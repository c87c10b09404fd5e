"""``python -m fmc.evaluate``: score predictions or baselines with the challenge's N_SSIM.

Thin entry point: configuration in ``conf/evaluate.yaml``, logic in :mod:`fmc.evaluation.scoring`.
``iou=proxy|cellpose`` adds an N_IoU-like segmentation score (:mod:`fmc.evaluation.iou`; not the
challenge's N_IoU, whose verified segmentations are not public).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fmc import __version__
from fmc.core.config_values import flag, whole_number
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


def build_methods(cfg: DictConfig) -> list[Method]:
    """The prediction folder and/or baselines to score, from the config."""
    methods = []
    if cfg.prediction is not None:
        folder = Path(cfg.prediction)
        if not folder.is_dir():
            raise FmcInputError(f"{folder}: prediction folder does not exist (prediction=...)")
        methods.append(Method("prediction", "prediction", folder=folder))
    baselines = [] if cfg.baseline is None else \
        [str(b).lower() for b in (cfg.baseline if OmegaConf.is_list(cfg.baseline)
                                   else [cfg.baseline])]
    for baseline in baselines:
        if baseline == "identity":
            methods.append(Method("identity", "identity"))
        elif baseline == "gaussian":
            sigma = cfg.sigma
            sigmas = cfg.sigma_sweep if isinstance(sigma, str) and sigma.lower() == "sweep" \
                else [sigma]
            for value in sigmas:
                sigma_zyx = parse_sigma(OmegaConf.to_object(value) if OmegaConf.is_config(value)
                                        else value)
                methods.append(Method("gaussian", gaussian_label(sigma_zyx), sigma_zyx=sigma_zyx))
        else:
            raise FmcConfigError(f"baseline={cfg.baseline}: choose identity, gaussian or "
                                 "[identity,gaussian] (conf/evaluate.yaml)")
    if not methods:
        raise FmcConfigError("nothing to score: give prediction=DIR (predictions named like the angle "
                             "files) or baseline=identity|gaussian")
    return methods


def build_iou_backend(cfg: DictConfig):
    """The segmentation backend of ``cfg.iou``, or None for ``none`` (the default).

    Raises
    ------
    FmcConfigError
        For an unknown choice, or ``cellpose`` when cellpose is not installed.
    """
    choice = "none" if cfg.iou is None else str(cfg.iou).strip().lower()
    if choice not in IOU_CHOICES:
        raise FmcConfigError(f"iou={cfg.iou}: choose none, proxy or cellpose (conf/evaluate.yaml)")
    return None if choice == "none" else make_segmenter(choice)


def _iou_max_voxels(cfg: DictConfig) -> int | None:
    value = cfg.iou_max_voxels
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise FmcConfigError(f"iou_max_voxels={value}: give a positive number of voxels or null "
                             "(conf/evaluate.yaml)")
    return number


def input_folder(cfg: DictConfig) -> Path:
    """``cfg.input`` (the raw pairs), or the embedded synthetic dataset when it is not given."""
    from fmc.preprocessing.embedded import raw_root_or_embedded

    return raw_root_or_embedded(cfg.input)


def output_folder(cfg: DictConfig) -> Path:
    """``cfg.output``, or this run's Hydra output folder."""
    if cfg.output is not None:
        return Path(cfg.output)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def evaluate(cfg: DictConfig) -> EvaluationResult:
    """Score every raw pair with every method of ``cfg`` and write the tables."""
    if str(cfg.table) not in ("auto", "full", "content"):
        raise FmcConfigError(f"table={cfg.table}: choose auto, full or content (conf/evaluate.yaml)")
    slab = whole_number(cfg.slab, "slab", 1, "conf/evaluate.yaml")
    block_y = whole_number(cfg.block_y, "block_y", 1, "conf/evaluate.yaml")
    methods = build_methods(cfg)
    iou_backend = build_iou_backend(cfg)
    iou_max_voxels = _iou_max_voxels(cfg)
    pairs = find_pairs(input_folder(cfg))
    if cfg.split_list is not None:
        pairs = restrict_to_list(pairs, cfg.split_list)
    # Proved writable before scoring, which can take hours, rather than when the tables are due.
    out_dir = writable_folder(output_folder(cfg), "output")
    check_predictions(pairs, methods)
    result = EvaluationResult(iou_backend=None if iou_backend is None else iou_backend.name)
    progress = _progress(pairs, enabled=flag(cfg.progress, "progress", "conf/evaluate.yaml"))
    for pair in progress:
        result.rows.extend(score_pair(pair, methods, slab=slab, block_y=block_y,
                                      iou_backend=iou_backend, iou_max_voxels=iou_max_voxels))
    result.summary = summarize(result.rows)
    per_image, summary = write_tables(out_dir, result)
    settings = {"metric": METRIC_SETTINGS}
    if iou_backend is not None:
        settings["iou_metric"] = (f"{iou_backend.name} segmentation; {IOU_SETTINGS}; not the "
                                  "challenge's N_IoU")
    write_text_atomic(out_dir / "evaluate.json", json.dumps({
        **settings, "fmc_version": __version__, "python": platform.python_version(),
        "config": OmegaConf.to_container(cfg, resolve=True), "methods": [m.label for m in methods],
        "n_pairs": len(pairs)}, indent=2, default=str))
    full = str(cfg.table) == "full" or (str(cfg.table) == "auto" and len(methods) <= 2)
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
