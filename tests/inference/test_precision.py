"""Prediction on a GPU that runs out of memory: batches are halved (down to one tile) and the
prediction does not change; a single tile that does not fit is one line. Simulated on the CPU
with a network that raises torch.OutOfMemoryError above a batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fmc.core.errors import FmcInputError
from fmc.inference.precision import OutOfMemoryHalving
from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import assert_user_error, run_in_process, trained_looking_checkpoint


def fits(most: int):
    """A forward pass that 'runs out of memory' above ``most`` tiles; the calls' batch sizes."""
    sizes: list[int] = []

    def forward(tiles: torch.Tensor) -> torch.Tensor:
        sizes.append(len(tiles))
        if len(tiles) > most:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return tiles[:, :1] * 2

    return forward, sizes


def test_batches_shrink_until_they_fit_and_stay_small():
    memory = OutOfMemoryHalving()
    forward, sizes = fits(most=2)
    tiles = torch.arange(8 * 2 * 2, dtype=torch.float32).reshape(8, 2, 1, 1, 2)
    out = memory.run(forward, tiles, "cpu", "none")
    torch.testing.assert_close(out, tiles[:, 0] * 2)
    assert sizes == [8, 4, 2, 2, 2, 2] and memory.limit == 2
    sizes.clear()
    memory.run(forward, tiles[:5], "cpu", "none")
    assert sizes == [2, 2, 1]  # the smaller size is kept for the rest of the volume


def test_a_tile_that_never_fits_is_one_line():
    forward, _ = fits(most=0)
    with pytest.raises(FmcInputError, match="out of memory on a single tile: give a smaller patch"):
        OutOfMemoryHalving().run(forward, torch.zeros(4, 2, 1, 1, 1), "cpu", "none")


def test_fmc_predict_survives_running_out_of_memory(tmp_path: Path, monkeypatch):
    from fmc.models.module import FusionModule

    checkpoint = trained_looking_checkpoint(tmp_path / "m.ckpt")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    view = raw / "image_0_nucleus_angle.tif"
    common = [f"ckpt={checkpoint}", f"input={view}", "progress=false", "patch=[16,32,32]",
              "batch_size=4"]
    result = run_in_process("fmc.predict", *common, f"output={tmp_path / 'plain'}")
    assert result.returncode == 0, result.stderr[-2000:]

    original = FusionModule.forward

    def small_gpu(self, inputs):
        if len(inputs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, inputs)

    monkeypatch.setattr(FusionModule, "forward", small_gpu)
    result = run_in_process("fmc.predict", *common, f"output={tmp_path / 'halved'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "predicting 1 tile(s) at a time" in result.stdout + result.stderr
    plain, _ = read_volume(tmp_path / "plain" / view.name)
    halved, _ = read_volume(tmp_path / "halved" / view.name)
    np.testing.assert_allclose(halved, plain, atol=1e-5)

    monkeypatch.setattr(FusionModule, "forward", lambda self, inputs: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory (simulated)")))
    result = run_in_process("fmc.predict", *common, f"output={tmp_path / 'never'}")
    assert_user_error(result, "out of memory on a single tile")
    assert not (tmp_path / "never" / view.name).exists()
