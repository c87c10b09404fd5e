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
    from fmc.inference.predict_settings import default_settings

    with pytest.raises(FmcConfigError, match="amp='fp8': choose one of auto, none, bf16, fp16"):
        default_settings(amp="fp8").check()


def test_auto_precision_is_bf16_on_a_cuda_gpu_and_float32_on_the_cpu(monkeypatch):
    import torch

    from fmc.inference.precision import autocast, resolve_amp

    assert resolve_amp("cpu", "auto") == "none"
    assert resolve_amp("cpu", "fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_amp("cuda", "auto") == "bf16"
    assert resolve_amp("cuda:0", "none") == "none"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_amp("cuda", "auto") == "none"  # an older GPU: float32, not a slow emulation
    with autocast("cpu", "auto"):  # the default on this machine: no low precision at all
        assert not torch.is_autocast_enabled("cpu")


def test_the_default_predicts_as_float32_on_the_cpu(tmp_path: Path):
    """fmc.predict's default (amp=auto) on a CPU gives the float32 volume, voxel for voxel."""
    checkpoint = trained_looking_checkpoint(tmp_path / "m.ckpt")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(16, 32, 32), scale=3.0)
    volumes = {}
    for name, extra in (("default", []), ("none", ["amp=none"])):
        result = run_in_process("fmc.predict", f"ckpt={checkpoint}",
                                f"input={raw / 'image_0_nucleus_angle.tif'}",
                                f"output={tmp_path / name}", "progress=false", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        volumes[name], _ = read_volume(tmp_path / name / "image_0_nucleus_angle.tif")
    assert (volumes["default"] == volumes["none"]).all()
