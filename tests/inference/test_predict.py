"""``python -m fmc.predict``: its ``main`` in-process (``run_in_process``), and once the real
command line for its exit-2 contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmc.io.tiff import read_volume
from fmc.simulation.synth import write_pair
from tests.conftest import (
    assert_imagej_readable,
    assert_user_error,
    run_command,
    run_in_process,
    save_tiny_checkpoint,
    trained_looking_checkpoint,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained residual model (the identity) saved as a Lightning checkpoint."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def test_predict_writes_the_input_name_shape_and_metadata(checkpoint: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    out = tmp_path / "pred"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={raw}", f"output={out}",
                            "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["image_0_nucleus_angle.tif"]  # fused skipped
    prediction, meta = read_volume(out / "image_0_nucleus_angle.tif")
    view, view_meta = read_volume(raw / "image_0_nucleus_angle.tif")
    assert prediction.shape == view.shape and prediction.dtype == np.float32
    assert (meta.study, meta.content, meta.spacing_zyx) == (1, "nucleus", view_meta.spacing_zyx)
    assert_imagej_readable(out / "image_0_nucleus_angle.tif", view_meta.spacing_zyx)
    # An untrained residual model is the identity: the prediction is the normalised view.
    from fmc.core.normalization import percentile_normalize

    np.testing.assert_allclose(prediction, percentile_normalize(view), atol=1e-4)


def test_predict_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path):
    fake = tmp_path / "model.ckpt"
    fake.write_text("not a checkpoint")
    raw = tmp_path / "raw"
    write_pair(raw, 1, "nucleus", 0, shape=(24, 48, 48), scale=3.0)
    # The real command line: the exit-2 contract (one line, no traceback) of fmc.predict.
    result = run_command("fmc.predict", f"ckpt={fake}", f"input={raw}", f"output={tmp_path / 'o'}")
    assert_user_error(result, "not an fmc checkpoint")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------
# Inputs, outputs and options (issue 6)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def views(tmp_path_factory) -> Path:
    """Two synthetic pairs (study 1 nucleus) as TIFFs, and their prepared H5 files and lists."""
    folder = tmp_path_factory.mktemp("views")
    for index in range(2):
        write_pair(folder / "raw", 1, "nucleus", index, shape=(20, 40, 44), scale=3.0)
    result = run_in_process("fmc.prepare", f"input={folder / 'raw'}", f"output={folder / 'h5'}",
                            "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


def _predict(checkpoint, source, out, *extra):
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={source}", f"output={out}",
                            "progress=false", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_h5_and_split_list_inputs_give_the_tiff_result(checkpoint: Path, views: Path, tmp_path):
    _predict(checkpoint, views / "raw", tmp_path / "from_tiff")
    _predict(checkpoint, views / "h5", tmp_path / "from_h5")
    lists = sorted((views / "h5" / "lists").glob("all_nucleus_*.csv"))
    listed = [line.split(";")[0] for path in lists for line in path.read_text().split()]
    lst = tmp_path / "mine.csv"
    lst.write_text("".join(f"{views / 'h5' / name};{views / 'h5' / name}\n" for name in listed[:1]))
    _predict(checkpoint, lst, tmp_path / "from_list")
    names = sorted(p.name for p in (tmp_path / "from_tiff").iterdir())
    assert names == ["image_0_nucleus_angle.tif", "image_1_nucleus_angle.tif"]
    assert sorted(p.name for p in (tmp_path / "from_h5").iterdir()) == names
    for name in names:
        a, meta_a = read_volume(tmp_path / "from_tiff" / name)
        b, meta_b = read_volume(tmp_path / "from_h5" / name)
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert meta_a.spacing_zyx == meta_b.spacing_zyx and meta_b.study == 1
    assert len(list((tmp_path / "from_list").iterdir())) == 1


def test_uint16_output_maps_back_to_the_input_range(checkpoint: Path, views: Path, tmp_path):
    # The untrained residual model is the identity: mapped back and rounded, it is the view.
    _predict(checkpoint, views / "raw" / "image_0_nucleus_angle.tif", tmp_path, "output_dtype=uint16")
    prediction, meta = read_volume(tmp_path / "image_0_nucleus_angle.tif")
    view, view_meta = read_volume(views / "raw" / "image_0_nucleus_angle.tif")
    assert prediction.dtype == np.uint16 and meta.spacing_zyx == view_meta.spacing_zyx
    assert np.abs(prediction.astype(int) - view.astype(int)).max() <= 1


@pytest.mark.parametrize("options", [
    ("tta=[z,y,x]",),
    ("fallback=difference", "buffer_threshold_gb=0"),
    # The windows, overlaps and batch sizes are covered fast in test_tiling.py; here as commands:
    pytest.param(("weighting=roof", "roof_crop=[2,4,4]"), marks=pytest.mark.slow),
    pytest.param(("fallback=difference",), marks=pytest.mark.slow),
    pytest.param(("patch=[8,16,16]", "overlap=0.75", "batch_size=5", "weighting=constant"),
                 marks=pytest.mark.slow)])
def test_prediction_options_keep_the_identity(checkpoint: Path, views: Path, tmp_path, options):
    from fmc.core.normalization import percentile_normalize

    _predict(checkpoint, views / "raw" / "image_1_nucleus_angle.tif", tmp_path, *options)
    prediction, _ = read_volume(tmp_path / "image_1_nucleus_angle.tif")
    view, _ = read_volume(views / "raw" / "image_1_nucleus_angle.tif")
    np.testing.assert_allclose(prediction, percentile_normalize(view), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["image_1_nucleus_angle.tif"]  # no leftovers


def test_the_checkpoints_tta_is_predicted_without_a_flag(views: Path, tmp_path: Path):
    """model.tta travels in the checkpoint: fmc.predict's default (tta=auto) averages those
    flips, as tta=[x] does for a checkpoint without them; tta=[] turns them off."""
    with_flips = trained_looking_checkpoint(tmp_path / "flips.ckpt", tta=["x"])
    without = trained_looking_checkpoint(tmp_path / "plain.ckpt")
    source = views / "raw" / "image_1_nucleus_angle.tif"
    runs = {"auto": (with_flips, ()), "asked": (without, ("tta=[x]",)),
            "off": (with_flips, ("tta=[]",))}
    predictions = {}
    for name, (ckpt, extra) in runs.items():
        _predict(ckpt, source, tmp_path / name, *extra)
        predictions[name] = read_volume(tmp_path / name / source.name)[0]
    np.testing.assert_allclose(predictions["auto"], predictions["asked"], atol=1e-6)
    assert np.abs(predictions["auto"] - predictions["off"]).max() > 1e-3


def test_registry_models_yaml_and_sweep_folder(checkpoint: Path, views: Path, tmp_path):
    import shutil

    # models.yaml with a nucleus model of study 3 only: study-1 volumes fall back to it.
    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copy(checkpoint, registry / "s3.ckpt")
    (registry / "models.yaml").write_text("models:\n  - {study: 3, content: nucleus, ckpt: s3.ckpt}\n")
    result = _predict("auto", views / "raw", tmp_path / "a", f"registry={registry}")
    assert len(list((tmp_path / "a").iterdir())) == 2
    assert "no model for study 1 nucleus" in result.stdout + result.stderr
    # A sweep folder: the run's best checkpoint, study/content read from the checkpoint.
    run = tmp_path / "sweep" / "0" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(checkpoint, run / "epoch0001-step4-nssim0.1200.ckpt")
    shutil.copy(checkpoint, run / "last.ckpt")
    result = _predict("auto", views / "raw", tmp_path / "b", f"registry={tmp_path / 'sweep'}")
    log = result.stdout + result.stderr
    assert "nssim0.1200" in log and "study 1 nucleus" in log


def test_predict_refuses_bad_volumes_before_writing(checkpoint: Path, tmp_path: Path):
    import tifffile

    bad = tmp_path / "bad"
    bad.mkdir()
    tifffile.imwrite(bad / "flat.tif", np.zeros((32, 32), np.uint16))
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={bad / 'flat.tif'}",
                            f"output={tmp_path / 'o'}")
    assert_user_error(result, "flat.tif")
    tifffile.imwrite(bad / "four.tif", np.zeros((2, 3, 16, 16), np.uint16), photometric="minisblack")
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={bad / 'four.tif'}",
                            f"output={tmp_path / 'o'}")
    assert_user_error(result, "four.tif")
    assert not (tmp_path / "o").exists()


def test_predict_refuses_an_unwritable_output_before_predicting(checkpoint: Path, views: Path,
                                                                tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={views / 'raw'}",
                            f"output={blocker / 'sub'}")
    assert_user_error(result, "cannot write there")


@pytest.mark.parametrize("overrides, message", [
    (("ckpt=auto",), "ckpt=auto needs registry"),
    (("patch=[7,16,16]",), "multiple of"),
    # Every enumerated key's message is checked in-process below; one through the command:
    pytest.param(("weighting=cosine",), "weighting='cosine'", marks=pytest.mark.slow),
])
def test_predict_config_errors(checkpoint: Path, views: Path, tmp_path: Path, overrides, message):
    args = [f"ckpt={checkpoint}", f"input={views / 'raw'}", f"output={tmp_path / 'o'}", *overrides]
    result = run_in_process("fmc.predict", *args)
    assert_user_error(result, message)
    assert not any((tmp_path / "o").glob("*.tif"))


def test_checkpoint_asking_for_an_unknown_channel_is_refused(views: Path, tmp_path: Path):
    odd = save_tiny_checkpoint(tmp_path / "odd.ckpt", channels=["raw_image", "depth_map"])
    result = run_in_process("fmc.predict", f"ckpt={odd}", f"input={views / 'raw'}",
                            f"output={tmp_path / 'o'}")
    assert_user_error(result, "depth_map")
    assert not any((tmp_path / "o").glob("*.tif"))


# ----------------------------------------------------------------------------------------------
# Settings: one home for the defaults (conf/inference/default.yaml), checked in-process
# ----------------------------------------------------------------------------------------------
# The defaults README.md documents ("Predicting"); fmc.challenge changes the two it states.
DOCUMENTED_DEFAULTS = {"patch": None, "overlap": 0.5, "batch_size": 2, "weighting": "gaussian",
                       "roof_crop": (5, 15, 15), "tta": None, "fallback": "auto",
                       "output_dtype": "float32", "output_format": "tiff", "amp": "auto", "compile": False,
                       "tiff_tiles": False,
                       "buffer_threshold_gb": 2.0,
                       "progress": True}
CHALLENGE_CHANGES = {"output_dtype": "uint16", "tiff_tiles": True, "progress": False, "overlap": 0.25}


def compose_config(command: str, *overrides: str):
    """The config ``python -m fmc.<command> <overrides>`` runs with (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    from fmc.core.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=command, overrides=list(overrides))


def test_predict_and_challenge_compose_the_same_inference_defaults():
    from omegaconf import OmegaConf

    from fmc.inference.predict_settings import (
        INFERENCE_DEFAULTS,
        PredictSettings,
        default_settings,
        settings_from,
    )

    shared = OmegaConf.load(INFERENCE_DEFAULTS)
    predict, challenge = compose_config("predict"), compose_config("challenge")
    for key in shared:
        assert predict[key] == shared[key], key
        assert challenge[key] == CHALLENGE_CHANGES.get(key, shared[key]), key
    assert settings_from(predict) == PredictSettings(**DOCUMENTED_DEFAULTS)
    assert settings_from(challenge) == PredictSettings(**{**DOCUMENTED_DEFAULTS, **CHALLENGE_CHANGES})
    assert default_settings() == settings_from(predict)
    assert default_settings(overlap=0.25).overlap == 0.25


def test_sliding_window_keys_stay_top_level_overrides():
    from fmc.inference.predict_settings import settings_from

    for command in ("predict", "challenge"):
        settings = settings_from(compose_config(command, "overlap=0.25", "tta=[y,x]", "patch=[8,16,16]",
                                                "output_dtype=float32"))
        assert (settings.overlap, settings.tta, settings.patch) == (0.25, ("y", "x"), (8, 16, 16))
        assert settings.output_dtype == "float32"


@pytest.mark.parametrize("command", ["predict", "challenge"])
@pytest.mark.parametrize("override, expected", [
    ("weighting=cosine", "weighting='cosine': choose one of gaussian, constant, roof"),
    ("fallback=always", "fallback='always': choose one of auto, none, difference, calibrated"),
    ("output_dtype=int8", "output_dtype='int8': choose one of float32, uint16"),
    ("tta=[y,w]", "tta axis 'w': use z, y or x"),
    ("overlap=1.0", "overlap=1.0: give a fraction in [0, 1)"),
    ("batch_size=many", "batch_size='many': give a whole number"),
])
def test_a_bad_setting_is_a_one_line_config_error(command, override, expected):
    from fmc.core.errors import FmcConfigError
    from fmc.inference.predict_settings import settings_from

    with pytest.raises(FmcConfigError) as caught:
        settings_from(compose_config(command, override))
    assert str(caught.value) == expected


def test_the_enumerations_in_the_messages_are_the_checked_ones():
    from fmc.inference.output_formats import OUTPUT_FORMATS
    from fmc.inference.predict_settings import OUTPUT_DTYPES
    from fmc.inference.tile_weights import WEIGHTINGS
    from fmc.models.fallback import fallback_choices

    # The messages above list these names; a new choice must show up in the message test too.
    assert WEIGHTINGS.names() == ("gaussian", "constant", "roof")
    assert fallback_choices() == ("auto", "none", "difference", "calibrated")
    assert OUTPUT_FORMATS.names() == ("tiff", "ome-zarr")
    assert OUTPUT_DTYPES == ("float32", "uint16")
