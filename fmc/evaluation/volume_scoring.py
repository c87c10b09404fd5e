"""Score a model on whole prepared volumes with the challenge's N_SSIM (training-time selection
and the end-of-training test).

The patch proxy (:mod:`fmc.models.patch_metric`) is cheap but is not the score the challenge ranks by.
This module predicts whole volumes with ``fmc.predict``'s own code and settings
(:func:`fmc.inference.volume_prediction.predict_volume`, :func:`scoring_settings`) and scores
them with :func:`fmc.evaluation.metrics.n_ssim` (percentile normalisation, 7-voxel uniform window, the
volumes' own range). Inputs are ``fmc.prepare``'s H5 pairs: their ``data/raw_image`` holds the
view and the fusion percentile-normalised without clipping, an affine map that the metric's own
normalisation undoes, so the score equals the one ``fmc.evaluate`` gives on the TIFFs (tested to
1e-5).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.logs import paced, plural
from fmc.inference.network_input import NetworkInput, open_volume
from fmc.inference.predict_settings import PredictSettings, default_settings
from fmc.inference.volume_prediction import predict_volume
from fmc.io.h5 import RAW_IMAGE, read_attrs
from fmc.preprocessing.channel_specs import VIEW

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeScore:
    """Challenge N_SSIM of one predicted volume, and the baselines' when they were scored.

    Attributes
    ----------
    name, study, content : the prepared angle file's name, its study and content
    n_ssim : float
        The prediction's N_SSIM.
    ssim, identity_ssim : float
        SSIM of the prediction and of the view itself against the fusion (NaN: not kept);
        the identity baseline's N_SSIM is 0 by definition.
    gaussian_n_ssim, gaussian_sigma : float
        The best Gaussian-smoothed view's N_SSIM and its σ in voxels (NaN: not scored).
    """

    name: str
    study: int | None
    n_ssim: float
    content: str | None = None
    ssim: float = math.nan
    identity_ssim: float = math.nan
    gaussian_n_ssim: float = math.nan
    gaussian_sigma: float = math.nan

    def row(self) -> dict[str, Any]:
        """One row of a per-volume table (``test_volumes.csv``, the W&B test table)."""
        return {"file": self.name, "study": self.study, "content": self.content,
                "n_ssim": self.n_ssim, "identity_n_ssim": 0.0,
                "gaussian_n_ssim": self.gaussian_n_ssim, "gaussian_sigma": self.gaussian_sigma,
                "ssim": self.ssim, "identity_ssim": self.identity_ssim}


# Columns of VolumeScore.row, in order.
VOLUME_COLUMNS = ("file", "study", "content", "n_ssim", "identity_n_ssim", "gaussian_n_ssim",
                  "gaussian_sigma", "ssim", "identity_ssim")
# Gaussian σ (voxels) tried for the best-Gaussian baseline: fmc.evaluate's own sweep.
BASELINE_SIGMAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def scoring_settings(overlap: float = 0.5, batch_size: int = 4,
                     fallback: str = "auto") -> PredictSettings:
    """The settings whole volumes are scored with: ``fmc.predict``'s own
    (``conf/inference/default.yaml``) with this window and batch, and no progress bar."""
    return default_settings(overlap=overlap, batch_size=batch_size, fallback=fallback,
                            progress=False)


# Called with (index, angle H5 path, fused H5 path, prediction, score) after each volume.
VolumeVisitor = Callable[[int, Path, Path, np.ndarray, VolumeScore], None]


def score_h5_pairs(model, pairs: Sequence[tuple[Path, Path]], settings: PredictSettings,
                   label: str = "whole volumes", baselines: Sequence[float] = (),
                   visit: VolumeVisitor | None = None) -> list[VolumeScore]:
    """Predict each (angle, fused) H5 pair as ``fmc.predict`` would (``settings``, e.g.
    :func:`scoring_settings`) and score it with the challenge's N_SSIM.

    Logs a line first (``label`` and how many volumes; on a CPU one takes seconds to minutes)
    and, while it takes long, one every 10 s or so (:func:`fmc.core.logs.paced`).

    ``baselines``: Gaussian σ (voxels) to smooth the view with; the best one's N_SSIM is kept
    beside the model's (the same pass over the fusion scores them all). ``visit`` sees each
    prediction while it is in memory (whole-volume validation draws one).
    """
    import h5py

    from fmc.evaluation.metrics import GaussianFilteredVolume, n_ssim_from, ssim_against

    log.info("%s: predicting and scoring %s", label, plural(len(pairs), "whole volume"))
    scores = []
    for index, (angle_path, fused_path) in enumerate(paced(pairs, log, label)):
        prediction = predict_volume(model, angle_path, settings)
        with h5py.File(angle_path, "r") as angle, h5py.File(fused_path, "r") as fused:
            view = angle[RAW_IMAGE]
            smoothed = [GaussianFilteredVolume(view, sigma) for sigma in baselines]
            identity, model_ssim, *gaussian = ssim_against(fused[RAW_IMAGE],
                                                           [view, prediction, *smoothed])
        value = n_ssim_from(model_ssim, identity)
        attrs = read_attrs(fused_path)
        best = {"gaussian_n_ssim": math.nan, "gaussian_sigma": math.nan}
        if gaussian:
            values = [n_ssim_from(g, identity) for g in gaussian]
            at = int(np.nanargmax(values)) if not all(math.isnan(v) for v in values) else 0
            best = {"gaussian_n_ssim": float(values[at]), "gaussian_sigma": float(baselines[at])}
        study, content = attrs.get("study"), attrs.get("content")
        score = VolumeScore(Path(angle_path).name, int(study) if study is not None else None,
                            float(value), None if content is None else str(content),
                            float(model_ssim), float(identity), **best)
        if visit is not None:
            visit(index, Path(angle_path), Path(fused_path), prediction, score)
        scores.append(score)
    return scores


def summarize_scores(scores: Sequence[VolumeScore], prefix: str) -> dict[str, float]:
    """``{prefix: mean, prefix/worst: min, prefix/study<k>: mean per study}`` (NaNs ignored)."""
    values = [s.n_ssim for s in scores if not math.isnan(s.n_ssim)]
    if not values:
        return {}
    summary = {prefix: float(np.mean(values)), f"{prefix}/worst": float(np.min(values))}
    for study in sorted({s.study for s in scores if s.study is not None}):
        per_study = [s.n_ssim for s in scores if s.study == study and not math.isnan(s.n_ssim)]
        if per_study:
            summary[f"{prefix}/study{study}"] = float(np.mean(per_study))
    return summary


def calibrate_change_limit_on(model, pairs: Sequence[tuple[Path, Path]],
                              settings: PredictSettings, percentile: float = 99.0) -> float:
    """``change_limit`` of ``model`` (:class:`fmc.models.fallback.ChangeLimit`) from volumes it knows.

    Predicts each pair's angle volume with ``settings`` but without fallback and takes the
    ``percentile`` of the local change over all coarse nodes
    (:func:`fmc.models.fallback.calibrate_change_limit`).
    """
    from fmc.models.fallback import DifferenceWeighting, calibrate_change_limit

    log.info("calibrating the fallback: predicting %s without it", plural(len(pairs), "volume"))
    changes = []
    for angle_path, _ in paced(pairs, log, "calibrating the fallback"):
        prediction = predict_volume(model, angle_path, replace(settings, fallback="none"))
        opened = open_volume(angle_path)
        try:
            view = NetworkInput(opened, [VIEW]).raw(0, prediction.shape[0])
        finally:
            opened.close()
        weighting = DifferenceWeighting(prediction.shape)
        weighting.add(0, view, prediction)
        changes.append(weighting.coarse_change())
    return calibrate_change_limit(changes, percentile)
