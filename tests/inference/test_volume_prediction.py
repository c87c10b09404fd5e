"""One predict_volume: fmc.predict's file, training's whole-volume validation and calibration
predict through the same code (fmc.inference.volume_prediction), fallback included."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from fmc.inference.predict_settings import default_settings
from fmc.inference.prediction import predict_file
from fmc.inference.volume_prediction import fallback_in_memory, predict_volume
from fmc.io.h5 import RAW_IMAGE
from fmc.models.checkpoint import load_fusion_module
from tests.conftest import trained_looking_checkpoint


@pytest.mark.parametrize("fallback", ["none", "difference"])
def test_in_memory_prediction_is_the_written_file(raw_and_h5, tmp_path: Path, fallback: str):
    _, h5_root = raw_and_h5
    angle = sorted(h5_root.glob("*_angle.h5"))[0]
    model = load_fusion_module(trained_looking_checkpoint(tmp_path / "m.ckpt"))
    settings = default_settings(fallback=fallback, progress=False)
    in_memory = predict_volume(model, angle, settings)
    written = predict_file(model, angle, tmp_path / "out", settings)
    assert np.array_equal(tifffile.imread(written), in_memory)
    assert not model.training  # restored as it was


def test_fallback_in_memory_is_the_streamed_fallback(raw_and_h5, tmp_path: Path):
    import h5py

    _, h5_root = raw_and_h5
    angle = sorted(h5_root.glob("*_angle.h5"))[0]
    model = load_fusion_module(trained_looking_checkpoint(tmp_path / "m.ckpt"))
    plain = predict_volume(model, angle, default_settings(fallback="none", progress=False))
    streamed = predict_volume(model, angle, default_settings(fallback="difference",
                                                             progress=False))
    with h5py.File(angle, "r") as f:
        view = f[RAW_IMAGE][...]
    blended = fallback_in_memory(view, plain, model.hparams, "difference")
    assert not np.allclose(blended, plain)  # the fallback did something
    np.testing.assert_allclose(blended, streamed, atol=1e-6)
    assert fallback_in_memory(view, plain, model.hparams, "none") is plain
