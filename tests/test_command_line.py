"""A mistyped key, option or sweep is one line and exit code 2 before any folder is made
(fmc/core/command_line.py); a run that fails with a user error leaves no run folder; and
``FMC_OVERRIDES`` appends overrides to a command as typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmc.core.cli import CONFIG_DIR
from fmc.core.command_line import check_command_line, split_command_line
from fmc.core.errors import FmcConfigError
from tests.conftest import run_command


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("arguments,expected", [
    (["trainer.max_step=5"], "trainer.max_step: no such key; did you mean trainer.max_steps"),
    # Hydra's own advice for the line above: the key would reach Lightning's Trainer.
    (["+trainer.max_step=5"], "trainer.max_step: no such key; did you mean trainer.max_steps"),
    (["model=unet4d"], "model=unet4d: no such option (did you mean model=unet3d?)"),
    (["--multirun", "modle.lr=0.1,0.2"], "modle.lr: no such key; did you mean model.lr"),
    (["study=1,2"], "study=1,2 is a sweep over several values: add --multirun"),
    (["+seed=3"], "+seed: seed exists already; set it without the +: seed=..."),
])
def test_a_mistake_on_the_train_command_line_is_one_line_and_no_folder(tmp_path: Path, arguments,
                                                                        expected):
    result = run_command("fmc.train", *arguments, cwd=tmp_path, timeout=120)
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []  # no outputs/, no data/


def test_a_run_that_fails_before_training_leaves_no_run_folder(tmp_path: Path):
    (tmp_path / "outputs" / "train").mkdir(parents=True)  # the user's: stays
    result = run_command("fmc.train", "study=7", cwd=tmp_path, timeout=120)
    assert "unknown study 7" in one_line_error(result)
    assert list((tmp_path / "outputs" / "train").iterdir()) == []


def test_extra_overrides_come_from_the_environment(tmp_path: Path):
    shown = run_command("fmc.predict", "--cfg", "job", cwd=tmp_path, timeout=120,
                        env={"FMC_OVERRIDES": "overlap=0.125 'tta=[y,x]'"})
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "overlap: 0.125" in shown.stdout and "tta:\n- 'y'\n- x" in shown.stdout
    refused = run_command("fmc.predict", "input=a.tif", cwd=tmp_path, timeout=120,
                          env={"FMC_OVERRIDES": "overlapp=0.1"})
    assert "overlapp: no such key; did you mean overlap" in one_line_error(refused)


def test_every_command_checks_its_own_keys():
    for command, good, bad in (("predict", "overlap=0.25", "overlap_=1"),
                               ("evaluate", "baseline=gaussian", "basline=gaussian"),
                               ("challenge", "on_error=fail", "on_eror=fail"),
                               ("prepare", "workers=2", "worker=2")):
        check_command_line(CONFIG_DIR, command, f"fmc.{command}", ["fmc", good])
        with pytest.raises(FmcConfigError, match="no such key"):
            check_command_line(CONFIG_DIR, command, f"fmc.{command}", ["fmc", bad])


def test_sweeps_groups_and_kwargs_pass_the_check():
    for line in (["-m", "study=1,2,3,4,5", "content=nucleus,membrane"],
                 ["--multirun", "seed=0,1,2", "hydra/launcher=joblib"],
                 ["--multirun", "holdout=1,2", "content=nucleus"],
                 ["--multirun", "hparams_search=optuna"],
                 ["experiment=rwth_ge", "+loss.kwargs.new_weight=2"],
                 ["--help"]):
        check_command_line(CONFIG_DIR, "train", "fmc.train", ["fmc.train", *line])


def test_a_key_added_to_an_open_mapping_passes_the_check():
    # conf/synth.yaml leaves optics: {} open for the simulation's parameters (its own example).
    check_command_line(CONFIG_DIR, "synth", "fmc.synth",
                       ["fmc.synth", "+optics.photons=500", "+fusion.blend_width=0.3"])
    with pytest.raises(FmcConfigError, match="no such key"):
        check_command_line(CONFIG_DIR, "synth", "fmc.synth", ["fmc.synth", "+photons=500"])


def test_options_keep_their_values_when_the_command_line_is_split():
    assert split_command_line(["--cfg", "job", "a=1", "-m", "b=2"]) == (
        ["--cfg", "job", "-m"], ["a=1", "b=2"])


def test_every_renamed_key_is_refused_with_its_new_spelling():
    from fmc.core.command_line import RENAMED_KEYS

    for config_name, renamed in RENAMED_KEYS.items():
        for old, new in renamed.items():
            with pytest.raises(FmcConfigError) as refused:
                check_command_line(CONFIG_DIR, config_name, f"fmc.{config_name}",
                                   ["fmc", f"{old}=x"])
            assert str(refused.value) == (f'{old}=x: this key is now {new}= (fmc.{config_name}); '
                                          'see docs/design.md "Words"')
            # The new key exists in the command's config.
            check_command_line(CONFIG_DIR, config_name, f"fmc.{config_name}", ["fmc", f"{new}=x"])


@pytest.mark.parametrize("command,arguments,expected", [
    ("fmc.evaluate", ["pred=x"],
     'pred=x: this key is now prediction= (fmc.evaluate); see docs/design.md "Words"'),
    ("fmc.train", ["ckpt_path=last"], "ckpt_path=last: this key is now ckpt= (fmc.train)"),
    ("fmc.registry", ["export", "sweep", "out=models.zip"],
     "export sweep: fmc.registry takes key=value settings only: python -m fmc.registry "
     "input=SWEEP_OR_MODELS output=models.zip"),
])
def test_an_old_spelling_is_one_line_and_no_folder(tmp_path: Path, command, arguments, expected):
    result = run_command(command, *arguments, cwd=tmp_path, timeout=120)
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,arguments,expected", [
    ("fmc.view", ["view=x.tif", "ndisplay=4"], "fmc.view: error: ndisplay=4: choose 2 or 3 "
                                                "(conf/view.yaml)"),
    ("fmc.export", ["ckpt=m.ckpt", "format=zip", "output=m.zip"],
     "fmc.export: error: format=zip: choose one of torchscript, onnx, bioimageio "
     "(conf/export.yaml)"),
    ("fmc.prepare", ["input=raw", "compression=zip"],
     "fmc.prepare: error: compression=zip: choose one of lzf, gzip, none (conf/prepare.yaml)"),
    ("fmc.view", ["view=x.tif", "verbose=maybe"],
     "fmc.view: error: verbose=maybe: give true or false (conf/<command>.yaml)"),
])
def test_a_bad_setting_is_one_line_from_the_settings_object(tmp_path: Path, command, arguments,
                                                            expected):
    # Each command reads its settings once, at its entry point, into a typed object
    # (ViewSettings, ExportSettings, PrepareSettings; verbose: fmc.core.logs): a value it cannot
    # use is one line naming the key and the file, exit 2, before any file is read.
    result = run_command(command, *arguments, cwd=tmp_path, timeout=120)
    assert one_line_error(result) == expected
    assert list(tmp_path.iterdir()) == []


def test_a_switched_off_volume_validation_is_explicit():
    # callbacks.volume_validation=null: the test predicts with fmc.predict's own window and
    # batch (conf/inference/default.yaml); selecting by whole volumes needs the group.
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.inference.predict_settings import default_settings
    from fmc.training.builders import build_callbacks
    from fmc.training.results import volume_settings

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        on = compose(config_name="train", overrides=["callbacks.volume_validation.overlap=0.25"])
        off = compose(config_name="train", overrides=["callbacks.volume_validation=null"])
    window = on.callbacks.volume_validation
    assert volume_settings(on) == default_settings(overlap=0.25, batch_size=window.batch_size,
                                                   progress=False)
    assert volume_settings(off) == default_settings(progress=False)
    with pytest.raises(FmcConfigError, match=r"callbacks.checkpoint.monitor=val/volume_n_ssim "
                                             r"needs callbacks.volume_validation \(null here\)"):
        build_callbacks(off, Path("unused"), val_pairs=[("a", "b")])
