"""hparams_search=optuna: a Hydra Optuna sweep over fmc.train whose objective is the run's
selection score (whole-volume validation N_SSIM); the hpo extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_command

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def test_an_optuna_sweep_maximises_the_validation_score(h5_root: Path, tmp_path: Path):
    # As a user types it: no hydra.sweep.dir, from a folder of the user's.
    result = run_command(
        "fmc.train", "--multirun", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "study=1", "content=nucleus", f"data.root={h5_root}", "logger=none", "model=unet3d", "model.depth=2",
        "data.patch_size=[16,32,32]", "data.epoch_steps=2", "trainer.max_steps=2",
        "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
        "callbacks.volume_validation.every_minutes=null", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multirun").iterdir()
    assert f"compare them: python -m fmc.report sweep={sweep.relative_to(tmp_path)}" in result.stdout
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and isinstance(best["best_value"], float)
    assert set(best["best_params"]) == {"model.lr", "model.features", "loss.kwargs.ssim_weight",
                                        "data.foreground_share"}
    assert len([p for p in sweep.iterdir() if (p / "metrics.json").is_file()]) == 2
    # Each trial's name (W&B, metrics.json, fmc.report) shows the values it tried and its number.
    for trial in (0, 1):
        name = json.loads((sweep / str(trial) / "metrics.json").read_text())["run_name"]
        assert name.startswith("study1-nucleus-raw_distance-ssim_l1-unet3d-seed1337-model.lr=")
        assert "-model.features=" in name and name.endswith(f"-trial{trial}"), name
