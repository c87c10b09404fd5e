"""W&B runs a dashboard can group, filter and sort: names that differ wherever runs differ, one
group per sweep, job types, tags, the summary a runs table sorts by (fmc/training/run_identity.py,
fmc/training/results.py), read back from the offline run files as the W&B runs table shows them.
The README's ten-model sweep is checked the same way in tests/test_readme_commands.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fmc.training.run_identity import (
    base_name,
    job_type_of,
    run_identity,
    swept_keys,
    tags_of,
)
from tests.conftest import run_command
from tests.wandb_records import offline_runs


def _cfg(**changes):
    cfg = OmegaConf.create({
        "study": 3, "content": "nucleus", "holdout": None, "seed": 1337, "run_name": "auto",
        "channels": {"name": "raw_distance"}, "loss": {"name": "ssim_l1"},
        "model": {"network": "monai_basicunet"}, "logger": {"group": "auto", "tags": []}})
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_the_name_shows_every_choice_that_tells_runs_apart():
    plain = run_identity(_cfg(), {}).name
    assert plain == "study3-nucleus-raw_distance-ssim_l1-basicunet-seed1337"
    variants = {
        run_identity(_cfg(), {"experiment": "rwth_ge"}).name,
        run_identity(_cfg(study="all", holdout=4), {}).name,
        run_identity(_cfg(content="membrane"), {}).name,
        run_identity(_cfg(**{"channels.name": "raw"}), {}).name,
        run_identity(_cfg(**{"loss.name": "l1"}), {}).name,
        run_identity(_cfg(**{"model.network": "unet3d"}), {}).name,
        run_identity(_cfg(seed=0), {}).name,
    }
    assert len(variants) == 7 and plain not in variants
    assert "rwth_ge-study3-nucleus-raw_distance-ssim_l1-basicunet-seed1337" in variants
    assert "holdout4-nucleus-raw_distance-ssim_l1-basicunet-seed1337" in variants
    # The user's own name wins.
    assert run_identity(_cfg(run_name="mine"), {}).name == "mine"
    assert base_name(1, None, "membrane", "raw", "l1", "unet3d", 0) == \
        "study1-membrane-raw-l1-unet3d-seed0"


def test_a_sweep_names_what_it_varies_and_groups_its_runs(tmp_path: Path):
    sweep = tmp_path / "2026-12-05_10-00-00"
    overrides = ["study=1,2", "model.lr=0.001,0.0001", "trainer.max_steps=5"]
    assert swept_keys(overrides) == ["study", "model.lr"]
    first = run_identity(_cfg(study=1), {}, sweep, overrides, (),
                         ["study=1", "model.lr=0.001", "trainer.max_steps=5"], 0)
    second = run_identity(_cfg(study=1), {}, sweep, overrides, (),
                          ["study=1", "model.lr=0.0001", "trainer.max_steps=5"], 1)
    assert first.name == "study1-nucleus-raw_distance-ssim_l1-basicunet-seed1337-model.lr=0.001"
    assert first.name != second.name
    assert first.group == second.group == "2026-12-05_10-00-00"
    assert first.job_type == "train"
    # A search: its parameters vary, each trial numbered; the group a name of the user's own.
    trial = run_identity(_cfg(**{"logger.group": "lr-search"}), {"hparams_search": "optuna"},
                         sweep, [], ["model.lr"], ["model.lr=0.003"], 7)
    assert trial.name.endswith("-model.lr=0.003-trial7")
    assert (trial.group, trial.job_type) == ("lr-search", "search")
    # A single run: no group.
    assert run_identity(_cfg(), {}).group is None


def test_job_types_and_tags():
    assert job_type_of(None, None) == "train"
    assert job_type_of(None, 4) == "holdout"
    assert job_type_of("optuna", 4) == "search"
    tags = tags_of("all", "membrane", "monai_segresnet", "rwth_ge", "gpu", 2, ["mine"])
    assert tags == ("study:all", "content:membrane", "network:segresnet", "experiment:rwth_ge",
                    "profile:gpu", "holdout:2", "mine")
    assert tags_of(3, "nucleus", "unet3d", None, "cpu", None)[:4] == \
        ("study:3", "content:nucleus", "network:unet3d", "experiment:none")
    assert all(len(tag) <= 64 for tag in tags_of(3, "n", "u", None, None, None, ["x" * 99]))


TINY_SWEEP = ("model=unet3d model.features=4 model.depth=2 'data.patch_size=[16,32,32]' "
              "data.batch_size=1 data.epoch_steps=1 trainer.max_steps=1 "
              "trainer.num_sanity_val_steps=0 trainer.enable_progress_bar=false "
              "callbacks.checkpoint.monitor=val/n_ssim test_volumes=false")


@pytest.mark.slow
def test_an_experiment_sweep_over_seeds_differs_from_the_defaults_by_name(tmp_path: Path):
    """experiment=unseen_studies seed=0,1 beside a default run: three names, the sweep's two
    runs in its own group."""
    env = {"FMC_OVERRIDES_TRAIN": TINY_SWEEP}
    for args in (["--multirun", "experiment=unseen_studies", "seed=0,1", "study=1"],
                 ["study=1", "seed=0"]):
        result = run_command("fmc.train", *args, cwd=tmp_path, env=env, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    runs = offline_runs(tmp_path / "outputs")
    assert sorted(run.name for run in runs) == [
        "study1-nucleus-raw_distance-ssim_l1-unet3d-seed0",
        "unseen_studies-study1-nucleus-raw_distance-ssim_l1-unet3d-seed0",
        "unseen_studies-study1-nucleus-raw_distance-ssim_l1-unet3d-seed1"]
    assert sorted(run.group for run in runs)[0] == ""
    assert len({run.group for run in runs if run.group}) == 1
