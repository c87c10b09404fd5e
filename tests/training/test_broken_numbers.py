"""Broken numbers stop early: non-finite weights, a diverging run, values Hydra accepts but
fmc cannot use, and what a re-run into a used run folder may not do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from fmc.models.checkpoint import read_checkpoint
from tests.conftest import TINY_RUN, assert_user_error, run_in_process, save_tiny_checkpoint


def test_a_diverging_run_stops_at_its_first_non_finite_loss(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}",
                            "trainer.max_steps=20", "model.lr=1e30", run_dir=run_dir)
    assert_user_error(result, "training diverged at step", "model.lr=1e+30")
    line = result.stderr.strip().splitlines()[-1]
    assert "the last finite checkpoint is" in line or "no checkpoint was saved" in line, line
    assert "volume 1 holds NaN" not in result.stdout + result.stderr
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        read_checkpoint(checkpoint)  # every checkpoint left holds finite weights


@pytest.mark.parametrize(("override", "message"), [
    ("model.lr=nan", "model.lr=nan: give a finite number > 0"),
    ("model.lr=0", "model.lr=0: give a finite number > 0"),
    ("model.weight_decay=-1", "model.weight_decay=-1: give a finite number >= 0"),
    ("trainer.max_steps=-5", "trainer: `max_steps` must be a non-negative integer or -1"),
    ("trainer.max_time=soon", "trainer: `Timer(duration='soon')` is not a valid duration"),
])
def test_values_hydra_accepts_but_training_cannot_use(h5_root: Path, tmp_path: Path,
                                                      override: str, message: str):
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", override,
                            run_dir=tmp_path / "run")
    assert_user_error(result, message)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_a_used_run_folder_is_resumed_never_overwritten(h5_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    earlier = save_tiny_checkpoint(checkpoints / "last.ckpt")
    before = earlier.read_bytes()
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", run_dir=run_dir)
    assert_user_error(result, "holds the checkpoints of an earlier run", "ckpt=last")
    assert earlier.read_bytes() == before
    # resume=true with a metrics.json that is not JSON: one line naming it.
    (run_dir / "metrics.json").write_text("{not json")
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", "resume=true",
                            run_dir=run_dir)
    assert_user_error(result, "metrics.json: not readable as JSON", "remove it")
    (run_dir / "metrics.json").write_text(json.dumps([1, 2]))
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", "resume=true",
                            run_dir=run_dir)
    assert_user_error(result, "not an fmc metrics file")


@pytest.fixture
def view(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    path = tmp_path / "views" / "image_1_nucleus_angle.tif"
    write_volume(path, rng.gamma(2.0, 200.0, (16, 32, 32)).astype(np.uint16),
                 VolumeMeta(study=1, content="nucleus", spacing_zyx=(3.0, 0.585, 0.585)))
    return path


def _with_weights(path: Path, change) -> Path:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for name, value in checkpoint["state_dict"].items():
        if value.is_floating_point() and name.endswith("weight"):
            checkpoint["state_dict"][name] = change(value)
    torch.save(checkpoint, path)
    return path


def test_non_finite_weights_are_refused_at_load(tmp_path: Path, view: Path):
    checkpoint = _with_weights(save_tiny_checkpoint(tmp_path / "nan.ckpt"),
                               lambda w: torch.full_like(w, float("nan")))
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={view}",
                            f"output={tmp_path / 'out'}", "patch=[16,32,32]", "progress=false")
    assert_user_error(result, "weight tensors hold NaN or infinite values",
                      "use an earlier checkpoint")
    assert not (tmp_path / "out").exists()


def test_a_prediction_that_overflows_is_never_written(tmp_path: Path, view: Path):
    # Finite weights so large that the network's output overflows to inf / NaN.
    checkpoint = _with_weights(save_tiny_checkpoint(tmp_path / "huge.ckpt", residual=False,
                                                    norm="none"),
                               lambda w: torch.full_like(w, 1e30))
    output = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={view}",
                            f"output={output}", "patch=[16,32,32]", "progress=false",
                            "output_dtype=uint16")
    assert_user_error(result, "the prediction holds NaN or infinite values", "nothing written")
    assert not [p for p in output.rglob("*") if p.is_file()]
    # fmc.challenge writes the case's input instead (scored 0, never a NaN volume).
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "models.yaml").write_text(
        f"models:\n  - {{study: 1, content: nucleus, ckpt: {checkpoint}}}\n")
    answer = tmp_path / "answer"
    result = run_in_process("fmc.challenge", f"input={view.parent}", f"output={answer}",
                            f"registry={registry}", "patch=[16,32,32]", "progress=false")
    assert result.returncode == 0, result.stderr
    assert "1 written as their input" in result.stdout
    assert (answer / view.name).read_bytes() != b""


def test_a_checkpoint_patch_too_big_for_the_machine_is_one_line(tmp_path: Path, view: Path):
    checkpoint = save_tiny_checkpoint(tmp_path / "huge_patch.ckpt", patch_size=[512, 2048, 2048])
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={view}",
                            f"output={tmp_path / 'out'}", "progress=false")
    assert_user_error(result, "patch=[512, 2048, 2048]: a batch of 2 such tiles needs at least",
                      "give a smaller patch=[Z, Y, X]")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
