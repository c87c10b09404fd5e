"""Which validated weights the whole-volume validation keeps (callbacks.checkpoint.save_top_k)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmc.training.volume_validation import VolumeValidation


class _Trainer:
    """What VolumeValidation's saving needs of a Lightning trainer: write a file, rank zero."""

    is_global_zero = True

    def save_checkpoint(self, path: str, weights_only: bool = False) -> None:
        Path(path).write_bytes(b"weights")


def _validated(tmp_path: Path, keep: int, scores: list[float]) -> VolumeValidation:
    callback = VolumeValidation([], at_end=True, dirpath=tmp_path, keep=keep)
    for step, score in enumerate(scores, start=1):
        improved = callback.best_score is None or score > callback.best_score
        if improved:
            callback.best_score = score
        if callback._ranks(score):
            callback._save_ranked(_Trainer(), step * 100, score, improved)
    return callback


@pytest.mark.parametrize(("keep", "expected"), [
    (1, {"best-step200-vnssim0.3000.ckpt"}),
    (2, {"best-step200-vnssim0.3000.ckpt", "best-step300-vnssim0.2000.ckpt"}),
    (-1, {"best-step100-vnssim0.1000.ckpt", "best-step200-vnssim0.3000.ckpt",
          "best-step300-vnssim0.2000.ckpt", "best-step400-vnssim0.0500.ckpt"}),
])
def test_the_k_best_validations_weights_stay(tmp_path: Path, keep: int, expected: set[str]):
    callback = _validated(tmp_path, keep, [0.1, 0.3, 0.2, 0.05])
    assert {p.name for p in tmp_path.glob("*.ckpt")} == expected
    assert callback.best_path == tmp_path / "best-step200-vnssim0.3000.ckpt"


def test_the_kept_files_survive_a_resume(tmp_path: Path):
    callback = _validated(tmp_path, 2, [0.1, 0.3])
    resumed = VolumeValidation([], at_end=True, dirpath=tmp_path, keep=2)
    resumed.load_state_dict(callback.state_dict())
    resumed.best_score = callback.best_score
    resumed._save_ranked(_Trainer(), 300, 0.2, False)  # ranks second: the 0.1 file goes
    assert {p.name for p in tmp_path.glob("*.ckpt")} == {"best-step200-vnssim0.3000.ckpt",
                                                         "best-step300-vnssim0.2000.ckpt"}


def test_keeping_no_weights_is_refused():
    with pytest.raises(ValueError, match="keep"):
        VolumeValidation([], at_end=True, keep=0)
