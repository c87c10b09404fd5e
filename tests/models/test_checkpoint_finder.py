"""One way to find a run's selected checkpoint (fmc.models.checkpoint.selected_checkpoint),
used by fmc.report, the registry of fmc.predict and training's own names."""

import json
from pathlib import Path

from fmc.inference.registry import ModelRegistry
from fmc.models.checkpoint import best_checkpoint_name, selected_checkpoint
from tests.conftest import save_tiny_checkpoint


def test_selected_checkpoint_in_order_recorded_then_best_name_then_last(tmp_path: Path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert selected_checkpoint(tmp_path) is None
    (folder / "last.ckpt").write_bytes(b"")
    assert selected_checkpoint(tmp_path) == folder / "last.ckpt"
    low, high = best_checkpoint_name(2, 0.1), best_checkpoint_name(4, 0.3)
    assert (low, high) == ("best-step2-vnssim0.1000.ckpt", "best-step4-vnssim0.3000.ckpt")
    for name in (low, high, "epoch0001-step9-nssim0.2000.ckpt"):  # an older run's name too
        (folder / name).write_bytes(b"")
    assert selected_checkpoint(tmp_path).name == high
    # metrics.json's record wins, also when the sweep moved since (the same name in this run)
    recorded = {"best/checkpoint": f"/elsewhere/{low}"}
    assert selected_checkpoint(tmp_path, recorded).name == low
    (tmp_path / "metrics.json").write_text(json.dumps(recorded))
    assert selected_checkpoint(tmp_path).name == low
    (tmp_path / "metrics.json").write_text("{not json")  # unreadable: the names decide
    assert selected_checkpoint(tmp_path).name == high


def test_the_registry_takes_the_checkpoint_the_run_recorded(tmp_path: Path):
    run = tmp_path / "sweep" / "0"
    chosen = save_tiny_checkpoint(run / "checkpoints" / best_checkpoint_name(3, 0.1))
    save_tiny_checkpoint(run / "checkpoints" / best_checkpoint_name(5, 0.2))
    (run / "metrics.json").write_text(json.dumps({"best/checkpoint": str(chosen)}))
    [entry] = ModelRegistry.from_folder(tmp_path / "sweep").entries
    assert Path(entry.ckpt) == chosen
