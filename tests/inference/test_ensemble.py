"""Several checkpoints averaged: ``fmc.predict ckpt=[a,b]`` and registries with several models of
one study and content (fmc/inference/ensemble.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import assert_user_error, run_in_process, trained_looking_checkpoint

NAME = "image_0_nucleus_angle.tif"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """Two study-1 nucleus checkpoints that differ (random weights from seeds 0 and 1)."""
    folder = tmp_path_factory.mktemp("models")
    return [trained_looking_checkpoint(folder / f"seed{seed}.ckpt", seed=seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    write_pair(folder, 1, "nucleus", 0, shape=(20, 40, 44), scale=3.0)
    return folder


def _predict(ckpt: str, raw: Path, out: Path, *extra: str):
    result = run_in_process("fmc.predict", f"ckpt={ckpt}", f"input={raw}", f"output={out}",
                            "progress=false", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_volume(out / NAME)[0], result.stdout + result.stderr


@pytest.fixture(scope="module")
def singles(models, raw, tmp_path_factory) -> list[np.ndarray]:
    """Each model's own prediction of the view (no input fallback)."""
    out = tmp_path_factory.mktemp("singles")
    return [_predict(str(m), raw, out / m.stem, "fallback=none")[0] for m in models]


def test_a_list_of_checkpoints_predicts_the_mean_of_their_predictions(models, raw, singles,
                                                                      tmp_path):
    assert np.abs(singles[0] - singles[1]).mean() > 1e-3  # the two models do differ
    together, _ = _predict(f"[{models[0]},{models[1]}]", raw, tmp_path, "fallback=none")
    # The mean is taken per tile before the blend; the blend is linear, so it is the mean of
    # the two blended predictions up to float32 rounding.
    np.testing.assert_allclose(together, (singles[0] + singles[1]) / 2, atol=2e-5)
    # fallback=auto resolves through the ensemble's hyper-parameters: these checkpoints store no
    # fallback (and no change limit), so auto is none and gives the same volume.
    default, _ = _predict(f"[{models[0]},{models[1]}]", raw, tmp_path / "auto")
    np.testing.assert_array_equal(default, together)


def test_a_sweep_with_two_seeds_of_one_study_is_averaged(models, raw, singles, tmp_path):
    for seed, model in enumerate(models):  # what `fmc.train --multirun seed=0,1` leaves
        run = tmp_path / "sweep" / str(seed) / "checkpoints"
        run.mkdir(parents=True)
        shutil.copy(model, run / "last.ckpt")
    together, log = _predict("auto", raw, tmp_path / "out", f"registry={tmp_path / 'sweep'}",
                             "fallback=none")
    assert "study 1 nucleus, 2 models averaged" in log
    np.testing.assert_allclose(together, (singles[0] + singles[1]) / 2, atol=2e-5)
    # models.yaml: the entries of the volume's study and content are averaged; another study's
    # model is not mixed in.
    registry = tmp_path / "registry"
    registry.mkdir()
    lines = ["models:"] + [f"  - {{study: 1, content: nucleus, ckpt: {m}}}" for m in models]
    lines.append(f"  - {{study: 3, content: nucleus, ckpt: {models[0]}}}")
    (registry / "models.yaml").write_text("\n".join(lines) + "\n")
    listed, log = _predict("auto", raw, tmp_path / "listed", f"registry={registry}",
                           "fallback=none")
    np.testing.assert_allclose(listed, together, atol=1e-6)


def test_ensemble_change_limit_is_the_members_mean(models):
    from fmc.inference.ensemble import load_models

    ensemble = load_models(models)
    assert ensemble.hparams.change_limit is None  # never calibrated: no limit, fallback none
    ensemble.members[0].hparams["change_limit"] = 0.2
    ensemble.members[1].hparams["change_limit"] = 0.4
    from fmc.inference.ensemble import ensemble_hparams

    assert ensemble_hparams(list(ensemble.members))["change_limit"] == pytest.approx(0.3)
    assert ensemble.required_divisor == ensemble.members[0].required_divisor


@pytest.mark.parametrize("ckpt, message", [
    ("[]", "name at least one checkpoint"),
    ("TWICE", "is named twice"),
    ("[auto]", "give a checkpoint path"),
    ("OTHER_INPUTS", "must take the same inputs"),
])
def test_bad_ensembles_are_refused_before_writing(models, raw, tmp_path, ckpt, message):
    if ckpt == "TWICE":
        ckpt = f"[{models[0]},{models[0]}]"
    elif ckpt == "OTHER_INPUTS":
        raw_only = trained_looking_checkpoint(tmp_path / "raw_only.ckpt", channels=["raw_image"])
        ckpt = f"[{models[0]},{raw_only}]"
    result = run_in_process("fmc.predict", f"ckpt={ckpt}", f"input={raw}",
                            f"output={tmp_path / 'o'}")
    assert_user_error(result, message)
    assert not (tmp_path / "o").exists()


def test_the_challenge_container_averages_a_registrys_models_too(models, raw, tmp_path):
    inputs = tmp_path / "input"
    inputs.mkdir()
    shutil.copy(raw / NAME, inputs / NAME)
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "models.yaml").write_text(
        "models:\n" + "".join(f"  - {{study: 1, content: nucleus, ckpt: {m}}}\n" for m in models))
    result = run_in_process("fmc.challenge", f"input={inputs}", f"output={tmp_path / 'out'}",
                            f"registry={registry}", env={"FMC_LOG_DIR": str(tmp_path / "log")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 models averaged" in result.stdout + result.stderr
    expected, _ = _predict(f"[{models[0]},{models[1]}]", raw, tmp_path / "predict",
                           "output_dtype=uint16")
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / NAME)[0], expected)
