"""``python -m fmc.predict`` through the real command."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest

from fmc.io import read_volume
from fmc.module import FusionModule
from fmc.synth import write_pair
from tests.conftest import assert_user_error, run_command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained residual model (the identity) saved as a Lightning checkpoint."""
    model = FusionModule(features=4, depth=2, residual=True, patch_size=[16, 32, 32], study=1,
                         content="nucleus", spacing_zyx=[3.0, 0.585, 0.585])
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_predict_writes_the_input_name_shape_and_metadata(checkpoint: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    out = tmp_path / "pred"
    result = run_command("fmc.predict", f"ckpt={checkpoint}", f"input={raw}", f"output={out}",
                         "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["image_0_nucleus_angle.tif"]  # fused skipped
    prediction, meta = read_volume(out / "image_0_nucleus_angle.tif")
    view, view_meta = read_volume(raw / "image_0_nucleus_angle.tif")
    assert prediction.shape == view.shape and prediction.dtype == np.float32
    assert (meta.study, meta.content, meta.spacing_zyx) == (1, "nucleus", view_meta.spacing_zyx)
    # An untrained residual model is the identity: the prediction is the normalised view.
    from fmc.metrics import percentile_normalize

    np.testing.assert_allclose(prediction, percentile_normalize(view), atol=1e-4)


def test_predict_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path):
    fake = tmp_path / "model.ckpt"
    fake.write_text("not a checkpoint")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    result = run_command("fmc.predict", f"ckpt={fake}", f"input={raw}", f"output={tmp_path / 'o'}")
    assert_user_error(result, "not an fmc checkpoint")
    assert not (tmp_path / "o").exists()
