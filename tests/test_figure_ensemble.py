"""scripts/figure_ensemble.py: each model's and the ensemble's prediction of one view, scored and
drawn (through the real fmc.predict command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from fmc.simulation.synth import write_pair
from tests.conftest import REPO, trained_looking_checkpoint


def test_the_figure_scores_every_model_and_their_mean(tmp_path: Path):
    from skimage.io import imread

    view, _ = write_pair(tmp_path / "raw", 1, "nucleus", 0, shape=(16, 32, 32), scale=3.0)
    models = [str(trained_looking_checkpoint(tmp_path / f"s{seed}.ckpt", seed=seed))
              for seed in (0, 1)]
    out = tmp_path / "figure.png"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "figure_ensemble.py"),
                             "--view", str(view), "--ckpt", *models, "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["model 1", "model 2",
                                                          "ensemble (mean of 2)"]
    scores = [float(line.split("N_SSIM")[1]) for line in lines[:3]]
    assert scores[0] != scores[1]
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # three blocks stacked
    assert np.ptp(image) > 0
