"""The training bar counts the whole run's steps and shows what trainer.max_time leaves
(fmc/training/progress.py)."""

from __future__ import annotations

from pathlib import Path

from fmc.training.progress import planned_steps, time_left_text
from tests.conftest import TINY_RUN, run_in_process


def test_the_plan_is_the_smaller_bound():
    assert planned_steps(-1, 1000, 100) == 100_000  # the defaults: 1000 epochs of 100 steps
    assert planned_steps(500, 1000, 100) == 500
    assert planned_steps(-1, -1, 100) is None
    assert planned_steps(None, 3, float("inf")) is None
    assert time_left_text(599.6) == "9:59" and time_left_text(-3) == "0:00"
    assert time_left_text(3 * 3600 + 61) == "3:01:01"


def test_a_run_shows_its_steps_of_the_total_and_the_time_left(h5_root: Path, tmp_path: Path):
    run = [item for item in TINY_RUN if "enable_progress_bar" not in item]
    result = run_in_process("fmc.train", *run, f"data.root={h5_root}", "trainer.max_steps=3",
                            "trainer.max_time=00:00:05:00", run_dir=tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    bar = result.stdout + result.stderr  # Lightning's tqdm bars write to stdout
    assert "train steps" in bar and "3/3" in bar and "max_time left=4:" in bar
    assert "Epoch 0" not in bar  # not Lightning's per-epoch bar
