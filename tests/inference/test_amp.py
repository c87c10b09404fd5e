"""Prediction in mixed precision (amp=bf16|fp16): the network in low precision, the blend in
float32; on a small volume the challenge score stays within 0.005 of float32."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmc.core.errors import FmcConfigError
from fmc.evaluation.metrics import n_ssim
from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import run_in_process, trained_looking_checkpoint


def test_low_precision_predictions_score_as_float32(tmp_path: Path):
    checkpoint = trained_looking_checkpoint(tmp_path / "m.ckpt")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    view, _ = read_volume(raw / "image_0_nucleus_angle.tif")
    fused, _ = read_volume(raw / "image_0_nucleus_fused.tif")
    scores = {}
    for amp in ("none", "bf16", "fp16"):
        out = tmp_path / amp
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}",
                                f"input={raw / 'image_0_nucleus_angle.tif'}", f"output={out}",
                                f"amp={amp}", "progress=false")
        assert result.returncode == 0, result.stderr[-2000:]
        prediction, _ = read_volume(out / "image_0_nucleus_angle.tif")
        assert prediction.dtype.name == "float32"
        scores[amp] = n_ssim(prediction, fused, view)
    assert abs(scores["none"]) > 0.01  # a network that changes the view
    assert abs(scores["bf16"] - scores["none"]) <= 0.005
    assert abs(scores["fp16"] - scores["none"]) <= 0.005


def test_an_unknown_precision_is_one_line():
    from fmc.inference.prediction import default_settings

    with pytest.raises(FmcConfigError, match="amp='fp8': choose one of none, bf16, fp16"):
        default_settings(amp="fp8").check()
