"""python -m fmc.export format=bioimageio: a BioImage Model Zoo package (spec 0.5) that
bioimageio.core's model test passes offline and whose prediction equals fmc's."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import assert_user_error, run_in_process, trained_looking_checkpoint

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module", params=["none", "head"])
def checkpoint(request, tmp_path_factory) -> Path:
    return trained_looking_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt",
                                      confidence=request.param,
                                      spacing_zyx=[3.0, 0.585, 0.585])


@pytest.fixture(scope="module")
def sample(h5_root: Path) -> Path:
    return sorted(h5_root.glob("*_angle.h5"))[0]


def export(checkpoint: Path, sample: Path, out: Path, *overrides: str):
    return run_in_process("fmc.export", f"ckpt={checkpoint}", "format=bioimageio", f"output={out}",
                          f"sample={sample}", *overrides)


def fmc_prediction(checkpoint: Path, raw: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """fmc's module on a whole (small) volume: raw normalised over the volume, tanh(d / 50)."""
    from fmc.models.checkpoint import load_fusion_module

    low, high = np.percentile(raw, [2, 99.8])
    inputs = np.stack([(raw - low) / (high - low + 1e-6), np.tanh(distance / 50.0)])[None]
    with torch.no_grad():
        return load_fusion_module(checkpoint)(torch.from_numpy(inputs.astype(np.float32))).numpy()


def test_package_passes_the_model_test_and_predicts_as_fmc(checkpoint: Path, sample: Path,
                                                          tmp_path: Path):
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict, test_model

    out = tmp_path / "model.zip"
    result = export(checkpoint, sample, out, "zoo.name=nuclei of study 1",
                    "zoo.authors=[Ada Lovelace]")
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(out) as package:
        names = set(package.namelist())
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    assert {"rdf.yaml", "README.md", "cover.png", "fmc_network.py", "weights_state_dict.pt",
            "weights_torchscript.pt", "test_raw.npy", "test_surface_distance.npy",
            "test_fused.npy"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["name"] == "nuclei of study 1"
    assert rdf["authors"] == [{"name": "Ada Lovelace"}]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert [t["id"] for t in rdf["inputs"]] == ["raw", "surface_distance"]
    scale_range = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range"]
    assert scale_range[0]["kwargs"]["min_percentile"] == 2.0
    assert scale_range[0]["kwargs"]["max_percentile"] == 99.8
    assert [a.get("scale") for a in rdf["inputs"][0]["axes"][2:]] == [3.0, 0.585, 0.585]
    card = (tmp_path / "model.zip.md").read_text()
    assert "python -m fmc.prepare" in card and "tanh(d / 50 µm)" in card

    # the zoo's own test, again, outside fmc, for both weight formats
    assert test_model(out).status == "passed"

    # another volume size, through the zoo's pipeline: the same numbers as fmc's module
    rng = np.random.default_rng(1)
    raw = rng.gamma(2.0, 50.0, size=(8, 20, 44)).astype(np.float32)
    distance = rng.normal(0, 40, size=raw.shape).astype(np.float32)
    expected = fmc_prediction(checkpoint, raw, distance)
    assert np.abs(expected[0, 0] - (raw - np.percentile(raw, 2)) /
                  np.ptp(np.percentile(raw, [2, 99.8]))).max() > 1e-2  # not the identity
    description = load_model_description(out)
    for weights in ("pytorch_state_dict", "torchscript"):
        pipeline = create_prediction_pipeline(description, weight_format=weights)
        got = predict(model=pipeline, inputs={"raw": raw[None, None],
                                              "surface_distance": distance[None, None]})
        np.testing.assert_allclose(np.asarray(got.members["fused"].data), expected, atol=1e-4,
                                   err_msg=weights)


def test_a_raw_only_model_has_one_input(sample: Path, tmp_path: Path):
    checkpoint = trained_looking_checkpoint(tmp_path / "raw.ckpt", channels=["raw_image"])
    result = export(checkpoint, sample, tmp_path / "raw.zip")
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "raw.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    assert [t["id"] for t in rdf["inputs"]] == ["raw"]


def test_bad_samples_are_refused_in_one_line(checkpoint: Path, tmp_path: Path, raw_folder: Path):
    out = tmp_path / "model.zip"
    result = export(checkpoint, tmp_path / "missing.h5", out)
    assert_user_error(result, "sample=", "no such file")
    tiff = sorted(raw_folder.glob("*_angle.tif"))[0]
    result = export(checkpoint, tiff, out)
    assert_user_error(result, "not a complete fmc H5 file")
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_without_bioimageio_the_format_names_the_extra(checkpoint: Path, sample: Path,
                                                       tmp_path: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bioimageio.core", None)
    result = export(checkpoint, sample, tmp_path / "model.zip")
    assert_user_error(result, "pip install -e '.[bioimageio]'")


def test_a_monai_network_travels_with_both_weight_formats(sample: Path, tmp_path: Path):
    pytest.importorskip("monai")
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict

    checkpoint = trained_looking_checkpoint(tmp_path / "monai.ckpt", network="monai_basicunet",
                                            features=8, depth=4)
    result = export(checkpoint, sample, tmp_path / "monai.zip")
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "monai.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
        environment = package.read("environment.yaml").decode()
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert "monai==" in environment and "torch==" in environment
    assert "MONAI included" in (tmp_path / "monai.zip.md").read_text()
    rng = np.random.default_rng(2)
    raw = rng.gamma(2.0, 50.0, size=(16, 32, 48)).astype(np.float32)
    distance = rng.normal(0, 40, size=raw.shape).astype(np.float32)
    expected = fmc_prediction(checkpoint, raw, distance)
    pipeline = create_prediction_pipeline(load_model_description(tmp_path / "monai.zip"),
                                          weight_format="pytorch_state_dict")
    got = predict(model=pipeline, inputs={"raw": raw[None, None],
                                          "surface_distance": distance[None, None]})
    np.testing.assert_allclose(np.asarray(got.members["fused"].data), expected, atol=1e-4)


def test_a_model_of_several_studies_gets_a_valid_zoo_name(sample: Path, tmp_path: Path):
    checkpoint = trained_looking_checkpoint(tmp_path / "all.ckpt", study=[1, 2, 5])
    result = export(checkpoint, sample, tmp_path / "all.zip")
    assert result.returncode == 0, result.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "all.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    assert rdf["name"] == "fmc studies 1-2-5 nucleus"
    result = export(checkpoint, sample, tmp_path / "bad.zip", "zoo.name=a/b")
    assert_user_error(result, "zoo.name='a/b': the zoo allows letters, digits")


ARCHITECTURE_ALONE = """
import sys
sys.modules["fmc"] = None  # fmc is not installed where the zoo runs a package
import json, runpy, torch
names = runpy.run_path("fmc_network.py")
network = names[sys.argv[1]](**json.loads(open("kwargs.json").read()))
network.load_state_dict(torch.load("state_dict.pt"))
with torch.no_grad():
    torch.save(network.eval()(*torch.load("inputs.pt")), "output.pt")
"""


def test_the_architecture_file_runs_alone_as_fmc_does(checkpoint: Path, tmp_path: Path):
    """fmc_network.py is fmc's network code less its fmc imports: without fmc, its callable with
    the package's state dict computes what fmc's module computes."""
    import json
    import subprocess
    import sys

    from fmc.inference.model_card import distance_scales
    from fmc.inference.tile_function import TileFunction, ZooTileFunction
    from fmc.inference.zoo_architecture import (
        ARCHITECTURE_CALLABLE,
        architecture_kwargs,
        architecture_source,
    )
    from fmc.models.checkpoint import load_fusion_module

    model = load_fusion_module(checkpoint).float().eval()
    function = ZooTileFunction(TileFunction.of_module(model), distance_scales(model))
    inputs = (torch.rand(1, 1, 8, 16, 16), 40 * torch.randn(1, 1, 8, 16, 16))
    (tmp_path / "fmc_network.py").write_text(architecture_source())
    (tmp_path / "kwargs.json").write_text(json.dumps(architecture_kwargs(model)))
    torch.save(function.state_dict(), tmp_path / "state_dict.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    result = subprocess.run([sys.executable, "-c", ARCHITECTURE_ALONE, ARCHITECTURE_CALLABLE],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        expected = model(torch.cat([inputs[0], torch.tanh(inputs[1] / 50.0)], dim=1))
    torch.testing.assert_close(torch.load(tmp_path / "output.pt"), expected, atol=1e-5, rtol=0)


def test_the_architecture_file_drops_only_top_level_fmc_imports():
    from fmc.inference.zoo_architecture import without_fmc_imports

    text, names = without_fmc_imports("from __future__ import annotations\nimport torch\n"
                                      "from fmc.models.unet3d import (\n    UNet3D,\n)\nX = 1\n")
    assert text == "import torch\nX = 1\n" and names == {"UNet3D"}
    for source in ("def f():\n    from fmc.core import errors\n", "import fmc.core.errors\n"):
        with pytest.raises(RuntimeError, match="top-level"):
            without_fmc_imports(source)
