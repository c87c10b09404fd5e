"""fmc installed from its wheel, not run from the checkout: the configs travel with the package
and the embedded dataset goes to ``FMC_DATA`` (fmc/core/locations.py), not to the current folder.

The wheel is built from a copy of the package's sources (no ``build/`` folder in the checkout),
installed without dependencies into a folder that leads ``PYTHONPATH`` (the test interpreter's
own packages provide torch, Hydra, ...), and the commands run from a folder outside the checkout.
``make test-wheel`` does the same with the dependencies in a fresh virtualenv.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fmc.core import locations
from tests.conftest import REPO, run_command

# What the wheel is built from: pyproject.toml names README.md; fmc/ and conf/ are the package.
SOURCES = ("pyproject.toml", "README.md", "fmc", "conf")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """fmc's wheel, built offline from a copy of the checkout's sources."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                            "--no-build-isolation", "--quiet", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("fmc-*.whl")
    return found


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory) -> Path:
    """The wheel installed (without dependencies) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                                "--quiet", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return target


def outside(site: Path, tmp_path: Path, *args: str, env: dict | None = None):
    """``python -m <args>`` with the installed fmc first on the path, from an empty folder
    outside the checkout."""
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    assert REPO not in folder.resolve().parents
    return run_command(*args, cwd=folder, env={"PYTHONPATH": str(site), **(env or {})},
                       timeout=120)


def test_the_wheel_holds_the_configs_and_every_module(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"fmc/conf/{p.relative_to(REPO / 'conf').as_posix()}"
               for p in (REPO / "conf").rglob("*.yaml")}
    assert {"fmc/conf/train.yaml", "fmc/conf/studies/study1.yaml",
            "fmc/conf/hydra/default.yaml"} <= configs
    assert configs <= names, sorted(configs - names)
    # pyproject.toml lists the packages (conf/ joins them as fmc.conf): none may be forgotten.
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fmc").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "fmc/napari.yaml" in names


def test_installed_commands_find_their_configs_outside_the_checkout(site: Path, tmp_path: Path):
    probe = subprocess.run([sys.executable, "-c", "import fmc, fmc.core.cli as cli; "
                            "print(fmc.__file__); print(cli.CONFIG_DIR)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    package, config = probe.stdout.split()
    # The installed copy, not the checkout that the editable install points to.
    assert Path(package).resolve() == (site / "fmc" / "__init__.py").resolve()
    assert Path(config).resolve() == (site / "fmc" / "conf").resolve()

    train = outside(site, tmp_path, "fmc.train", "--cfg", "job", "study=3", "content=nucleus")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "study: 3" in train.stdout and "study_facts:" in train.stdout
    predict = outside(site, tmp_path, "fmc.predict", "--cfg", "job", "ckpt=model.ckpt",
                      "input=views", "output=predictions")
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert "ckpt: model.ckpt" in predict.stdout and "overlap:" in predict.stdout
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == []


def test_extra_config_folders_add_studies_to_the_installed_package(site: Path, tmp_path: Path):
    text = (site / "fmc" / "conf" / "studies" / "study1.yaml").read_text()
    for old, new in (("study_facts.study1", "study_facts.study6"), ("study: 1", "study: 6"),
                     ("embedded: true", "embedded: false")):
        assert old in text, old
        text = text.replace(old, new)
    extra = tmp_path / "my_conf"
    (extra / "studies").mkdir(parents=True)
    (extra / "studies" / "study6.yaml").write_text(text)
    train = outside(site, tmp_path, "fmc.train", "--cfg", "job", "study=6", "content=nucleus",
                    env={"FMC_CONFIG_DIRS": str(extra)})
    assert train.returncode == 0, train.stderr[-3000:]
    assert "study: 6" in train.stdout and "study6:" in train.stdout


# -- where the data go --------------------------------------------------------------------------
def test_fmc_data_decides_where_the_embedded_dataset_goes(monkeypatch, tmp_path: Path):
    for name in ("FMC_DATA", "FMC_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locations.data_dir() == tmp_path / "home" / ".cache" / "fmc" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locations.data_dir() == tmp_path / "xdg" / "fmc" / "data"
    monkeypatch.setenv("FMC_CACHE", str(tmp_path / "cache"))
    assert locations.data_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("FMC_DATA", str(tmp_path / "mine"))
    assert locations.embedded_tiff_dir() == tmp_path / "mine" / "synthetic"
    assert locations.embedded_h5_dir() == tmp_path / "mine" / "synthetic_h5"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FMC_DATA", "relative")  # read from where it was given: made absolute
    assert locations.data_dir() == tmp_path / "relative"
    # The model packages' cache is the same user cache.
    from fmc.inference.packages import cache_folder

    assert cache_folder() == tmp_path / "cache"


def test_the_embedded_dataset_is_made_in_fmc_data_not_in_the_current_folder(
        monkeypatch, tmp_path: Path, caplog):
    from fmc.preprocessing.embedded import raw_root_or_embedded
    from fmc.simulation import synth

    def write_pair(root, study, content, index):  # the file names only: no simulation
        for path in synth.pair_paths(root, index, content):
            path.write_bytes(b"")

    monkeypatch.setattr(synth, "write_pair", write_pair)
    monkeypatch.setenv("FMC_DATA", str(tmp_path / "store"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with caplog.at_level(logging.INFO):
        root = raw_root_or_embedded(None)
    assert root == tmp_path / "store" / "synthetic"
    assert len(list(root.glob("*_angle.tif"))) == len(synth.default_dataset_plan())
    assert list(work.iterdir()) == []
    lines = [r.getMessage() for r in caplog.records if "no data root given" in r.getMessage()]
    assert any(f"synthesizing the default dataset into {root} " in line for line in lines)
    assert any(f"using the embedded synthetic dataset in {root}" in line for line in lines)
    assert locations.config_dir() == REPO / "conf"  # a checkout reads its own conf/
