"""Whole-volume scoring during and after training (fmc.evaluation.volume_scoring,
fmc.training.volume_validation)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fmc.preprocessing.splits import read_list
from tests.conftest import TINY_RUN, run_in_process, save_tiny_checkpoint


def test_identity_model_scores_zero_and_matches_evaluate_on_the_tiffs(raw_and_h5, tmp_path: Path):
    import lightning as L

    from fmc.evaluation.volume_scoring import score_h5_pairs, scoring_settings, summarize_scores
    from fmc.models.checkpoint import load_fusion_module

    raw, h5_root = raw_and_h5
    pairs = read_list(h5_root / "lists" / "study1_nucleus_test.csv", h5_root)
    # An untrained residual net is the identity: N_SSIM 0 by definition.
    identity = load_fusion_module(save_tiny_checkpoint(tmp_path / "identity.ckpt"))
    [score] = score_h5_pairs(identity, pairs, scoring_settings())
    assert score.study == 1 and abs(score.n_ssim) < 1e-6
    # A net that changes the volume: the in-memory H5 score equals fmc.predict + fmc.evaluate on
    # the TIFFs (the H5 intensities are an affine map of the TIFF's, which the metric undoes).
    changed = load_fusion_module(save_tiny_checkpoint(tmp_path / "changed.ckpt"))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in changed.net.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    [ours] = score_h5_pairs(changed, pairs, scoring_settings())
    checkpoint = tmp_path / "changed_saved.ckpt"
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(changed)
    trainer.save_checkpoint(checkpoint, weights_only=False)
    test_list = h5_root / "lists" / "study1_nucleus_test.csv"
    predicted = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={test_list}",
                               f"output={tmp_path / 'pred'}", "progress=false")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    evaluated = run_in_process("fmc.evaluate", f"input={raw}", f"prediction={tmp_path / 'pred'}",
                               f"split_list={test_list}", f"output={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))
    assert abs(ours.n_ssim) > 1e-3  # the net really changed something
    assert float(rows[0]["n_ssim"]) == pytest.approx(ours.n_ssim, abs=1e-5)
    summary = summarize_scores([ours, score], "test/n_ssim")
    assert summary["test/n_ssim/study1"] == pytest.approx((ours.n_ssim + score.n_ssim) / 2)
    assert summary["test/n_ssim/worst"] == min(ours.n_ssim, score.n_ssim)


def test_training_selects_by_whole_volumes_and_scores_the_test_list(h5_root: Path,
                                                                    tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}",
                            "callbacks.volume_validation.every_n_steps=1",
                            "trainer.max_steps=3", run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((run_dir / "volume_validation.json").read_text())
    # Every step, and not again at the end (the last step was just validated).
    assert [h["step"] for h in history] == [1, 2, 3]
    best = max(history, key=lambda h: h["score"])
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints == [f"best-step{best['step']}-vnssim{best['score']:.4f}.ckpt", "last.ckpt"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["selection"] == "val/volume_n_ssim"
    # What validation cost and what a step cost, for throughput comparisons.
    assert 0 < metrics["final/val_volume_seconds"] < metrics["train_seconds"]
    assert metrics["seconds_per_step"] == pytest.approx(metrics["train_seconds"] / 3, rel=1e-2)
    assert metrics["best/val_n_ssim"] == pytest.approx(best["score"])
    assert metrics["best/checkpoint"].endswith(checkpoints[0])
    assert len(metrics["test/volumes"]) == 1
    assert metrics["test/n_ssim"] == pytest.approx(metrics["test/n_ssim/study1"])
    # The report takes the run's own test score when nothing else scored it.
    report = run_in_process("fmc.report", f"runs=[{run_dir}]", f"output={tmp_path / 'report'}",
                            "evaluate_missing=false", "montage=false")
    assert report.returncode == 0, report.stderr[-2000:]
    row = next(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    assert float(row["test_n_ssim"]) == pytest.approx(metrics["test/n_ssim"], abs=1e-6)
    assert row["selection"] == "val/volume_n_ssim"


def test_minutes_cadence_and_final_validation(h5_root: Path, tmp_path: Path):
    """A cadence longer than the run: only the final weights are judged (at_end)."""
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}",
                            "callbacks.volume_validation.every_minutes=60", "test_volumes=false",
                            run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((run_dir / "volume_validation.json").read_text())
    assert [h["step"] for h in history] == [2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/n_ssim" not in metrics


def test_patch_proxy_selection_still_available(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}",
                            "callbacks.checkpoint.monitor=val/n_ssim", "data.epoch_steps=1",
                            run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    names = [p.name for p in (run_dir / "checkpoints").glob("*.ckpt")]
    assert any("-nssim" in n and "vnssim" not in n for n in names)
    assert not (run_dir / "volume_validation.json").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["selection"] == "val/n_ssim" and metrics["epochs"] == 2


def test_an_epoch_is_a_number_of_steps(h5_root: Path):
    from fmc.data.datamodule import FmcDataModule

    module = FmcDataModule(root=h5_root, train_list="study1_nucleus_train.csv",
                           val_list="study1_nucleus_val.csv", channels=["raw_image"],
                           patch_size=[16, 32, 32], batch_size=2, epoch_steps=7)
    module.setup("fit")
    assert len(module.train_dataloader()) == 7  # one training volume, 7 steps of 2 patches
    seed_epoch = FmcDataModule(root=h5_root, train_list="study1_nucleus_train.csv",
                               channels=["raw_image"], patch_size=[16, 32, 32], batch_size=1)
    seed_epoch.setup("fit")
    assert len(seed_epoch.train_dataloader()) == 1  # RWTH-GE's: one patch per volume


def test_bad_selection_metric_is_a_config_error(h5_root: Path, tmp_path: Path):
    from tests.conftest import assert_user_error

    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}",
                            "callbacks.checkpoint.monitor=val/loss", run_dir=tmp_path / "run")
    assert_user_error(result, "callbacks.checkpoint.monitor=val/loss")
