"""Study facts in YAML (conf/studies/): read by the code and shown in fmc.train's config; a new
study is one file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmc.core.errors import FmcConfigError
from fmc.core.studies import EMBEDDED_STUDIES, STUDIES, STUDY_DIR, load_studies, read_study_file
from tests.conftest import assert_user_error, run_command

TINY_TRAIN = ["logger=none", "model=unet3d", "model.features=4", "model.depth=2", "data.patch_size=[8,16,16]",
              "data.batch_size=1", "data.epoch_steps=2", "trainer.max_steps=2",
              "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
              "callbacks.volume_validation.every_minutes=null"]


def study6_yaml() -> str:
    """Study 1's file as a new study 6: another microscope (coarser voxels), not embedded."""
    text = (STUDY_DIR / "study1.yaml").read_text()
    for old, new in (("study_facts.study1", "study_facts.study6"), ("study: 1", "study: 6"),
                     ("embedded: true", "embedded: false"),
                     ("spacing_zyx: [1.0, 0.195, 0.195]", "spacing_zyx: [2.0, 0.5, 0.5]"),
                     ("demo_shape: [40, 112, 128]", "demo_shape: [16, 32, 32]"),
                     ("demo_scale: 3.0", "demo_scale: 1.0")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_the_shipped_studies_are_read_from_yaml():
    assert set(STUDIES) == set(EMBEDDED_STUDIES) == {1, 2, 3, 4, 5}
    assert STUDIES[4].spacing_zyx == (3.0, 0.33, 0.33) and STUDIES[4].degradation_axes == ("X",)
    assert STUDIES[3].synthetic_specimen["cell_diameter_um"] == (5.0, 8.0)


@pytest.mark.parametrize(("edit", "message"), [
    (("spacing_zyx: [2.0, 0.5, 0.5]", "spacing_zyx: [2.0, 0.5]"), "need 3 values"),
    (("degradation_axes: [Z]", "degradation_axes: [W]"), "degradation_axes from Z, Y, X"),
    (("study_facts.study6", "study_facts.study7"), "first line must be"),
    (("demo_scale: 1.0", "demo_scael: 1.0"), "missing demo_scale"),
])
def test_a_bad_study_file_is_one_line_naming_it(tmp_path: Path, edit, message):
    path = tmp_path / "study6.yaml"
    path.write_text(study6_yaml().replace(*edit))
    with pytest.raises(FmcConfigError, match=message) as caught:
        read_study_file(path)
    assert str(path) in str(caught.value)


def test_train_config_shows_the_facts():
    """The config ``fmc.train --cfg job study=4`` prints: fmc.train's command line adds the facts
    (fmc.training.profile.with_study_facts; the real command line does it in
    test_a_new_study_is_one_yaml_file, and prints a config in test_train.py)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from fmc.core.cli import CONFIG_DIR
    from fmc.training.profile import with_study_facts

    overrides = with_study_facts(["fmc.train", "study=4"])[1:]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        printed = OmegaConf.to_yaml(compose(config_name="train", overrides=overrides))
    assert "study_facts:\n  study1:" in printed and "  study5:" in printed


def test_a_new_study_is_one_yaml_file(tmp_path: Path):
    """study6.yaml in a config folder of FMC_CONFIG_DIRS: synthesize, prepare, train study=6,
    and fmc.predict picks its model from the registry by the volume's study."""
    conf = tmp_path / "conf"
    (conf / "studies").mkdir(parents=True)
    (conf / "studies" / "study6.yaml").write_text(study6_yaml())
    env = {"FMC_CONFIG_DIRS": str(conf)}
    assert load_studies([conf / "studies"])[6].spacing_zyx == (2.0, 0.5, 0.5)
    raw, h5, sweep = tmp_path / "raw", tmp_path / "h5", tmp_path / "sweep"
    for study, extra in ((6, ["n=5", "scale=2"]), (1, ["n=1", "start=5", "scale=3"])):
        result = run_command("fmc.synth", f"output={raw}", f"study={study}", "shape=[16,48,48]",
                             *extra, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
    result = run_command("fmc.prepare", f"input={raw}", f"output={h5}", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (h5 / "lists" / "study6_nucleus_train.csv").is_file()
    result = run_command("fmc.train", "study=6", "content=nucleus", f"data.root={h5}",
                         *TINY_TRAIN, f"hydra.run.dir={sweep / 'study6'}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = (sweep / "study6" / ".hydra" / "config.yaml").read_text()
    assert "study6:" in saved and "- 2.0" in saved
    out = tmp_path / "pred"
    result = run_command("fmc.predict", "ckpt=auto", f"registry={sweep}",
                         f"input={raw / 'image_0_nucleus_angle.tif'}", f"output={out}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "study 6 nucleus" in result.stdout + result.stderr
    assert (out / "image_0_nucleus_angle.tif").is_file()


def test_a_study_file_under_fmc_config_dirs_is_data_only_and_never_redefines(tmp_path: Path):
    """A ``!!python`` tag is refused (nothing runs) and a shipped study cannot be redefined
    (Hydra would show the shipped file while fmc used the other): one line, exit 2, at the
    command's start -- the files are read when fmc is imported."""
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile" / "studies"
    hostile.mkdir(parents=True)
    (hostile / "study7.yaml").write_text(
        "# @package study_facts.study7\n"
        f"study: !!python/object/apply:os.system ['touch {marker}']\n")
    result = run_command("fmc.predict", "ckpt=x.ckpt", "input=views", "output=out",
                         cwd=tmp_path, env={"FMC_CONFIG_DIRS": str(hostile.parent)})
    assert_user_error(result, "study7.yaml: not a plain YAML study file", "python/object")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    shadow = tmp_path / "shadow" / "studies"
    shadow.mkdir(parents=True)
    (shadow / "study3.yaml").write_text((STUDY_DIR / "study3.yaml").read_text()
                                        .replace("demo_scale: 3.0", "demo_scale: 0.5"))
    result = run_command("fmc.train", "study=3", cwd=tmp_path,
                         env={"FMC_CONFIG_DIRS": str(shadow.parent)})
    assert_user_error(result, "study3.yaml: study 3 is already defined by",
                      "give the new study another number")
