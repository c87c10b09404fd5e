"""Model packages (fmc.inference.packages, python -m fmc.registry): export a sweep as a zip with
hashes and a model card; predict from the zip or its URL (downloaded once, verified); refuse a
changed file with one line."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from fmc.core.errors import FmcInputError
from fmc.simulation.synth import write_pair
from tests.conftest import (
    assert_user_error,
    export_package,
    run_command,
    run_in_process,
    save_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A two-run sweep folder: study 1 nucleus (with its metrics.json) and study 3 membrane."""
    root = tmp_path_factory.mktemp("sweep")
    save_tiny_checkpoint(root / "0" / "checkpoints" / "epoch0001-step4-nssim0.1200.ckpt")
    (root / "0" / "metrics.json").write_text(json.dumps(
        {"run_name": "study1_nucleus", "global_step": 4, "best/val_n_ssim": 0.12,
         "test/n_ssim": 0.1}))
    save_tiny_checkpoint(root / "1" / "checkpoints" / "last.ckpt", study=3, content="membrane")
    return root


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_export_writes_models_hashes_and_a_card(sweep: Path, tmp_path: Path):
    from fmc.inference.packages import sha256_of

    package = export_package(sweep, tmp_path / "models.zip")
    with zipfile.ZipFile(package) as archive:
        names = sorted(archive.namelist())
        manifest = yaml.safe_load(archive.read("models.yaml"))
        card = archive.read("MODEL_CARD.md").decode()
        archive.extractall(tmp_path / "x")
    assert names == ["MODEL_CARD.md", "model00_study1_nucleus.ckpt",
                     "model01_study3_membrane.ckpt", "models.yaml"]
    for item in manifest["models"]:
        assert item["sha256"] == sha256_of(tmp_path / "x" / item["ckpt"])
    assert "study 1, content nucleus" in card and "best/val_n_ssim: +0.1200" in card


def test_predict_from_a_package_and_refuse_a_changed_one(sweep: Path, tmp_path: Path,
                                                         cache: Path):
    from fmc.inference.packages import open_registry, sha256_of

    package = export_package(sweep, tmp_path / "models.zip")
    raw = tmp_path / "raw"
    write_pair(raw, 3, "membrane", 0, shape=(24, 48, 48), scale=3.0)
    result = run_in_process("fmc.predict", "ckpt=auto", f"registry={package}", f"input={raw}",
                            f"output={tmp_path / 'pred'}", "progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "study 3 membrane" in result.stdout + result.stderr
    assert (tmp_path / "pred" / "image_0_membrane_angle.tif").is_file()
    assert len(list((cache / "packages").iterdir())) == 1  # unpacked once
    # The same package with one checkpoint changed (its models.yaml kept): refused by name.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(tampered, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data + b"x" if name.startswith("model01") else data)
    with pytest.raises(FmcInputError, match="model01_study3_membrane.ckpt: its sha256 differs"):
        open_registry(tampered)
    # A file changed in the unpacked cache is caught too: the hashes are checked at every open.
    unpacked = cache / "packages" / sha256_of(package)[:16]
    with open(unpacked / "model00_study1_nucleus.ckpt", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(FmcInputError, match="model00_study1_nucleus.ckpt: its sha256 differs"):
        open_registry(package)


def test_a_package_url_is_downloaded_once(sweep: Path, tmp_path: Path, cache: Path):
    from fmc.inference import packages

    served = tmp_path / "served"
    export_package(sweep, served / "models.zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/models.zip"
    try:
        registry = packages.open_registry(url)
        assert {(e.study, e.content) for e in registry.entries} == {(1, "nucleus"), (3, "membrane")}
        (served / "models.zip").unlink()  # a second open needs no network
        assert len(packages.open_registry(url).entries) == 2
        with pytest.raises(FmcInputError, match="cannot download"):
            packages.open_registry(url.replace("models.zip", "missing.zip"))
    finally:
        server.shutdown()
    assert len(list((cache / "downloads").iterdir())) == 1


def test_the_command_contract(tmp_path: Path):
    result = run_command("fmc.registry", f"input={tmp_path / 'nothing'}", cwd=tmp_path)
    assert_user_error(result, "missing value for 'output': add output=... to the command line "
                              "(see conf/registry.yaml)")
    result = run_command("fmc.registry", f"input={tmp_path / 'nothing'}",
                         f"output={tmp_path / 'm.zip'}", cwd=tmp_path)
    assert_user_error(result, "no such folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no m.zip, no run folder
    # The command line it had before it was a Hydra command: one line saying what it is now.
    result = run_command("fmc.registry", "export", str(tmp_path / "nothing"),
                         f"out={tmp_path / 'm.zip'}", cwd=tmp_path)
    assert_user_error(result, "fmc.registry takes key=value settings only: "
                              "python -m fmc.registry input=SWEEP_OR_MODELS output=models.zip")
    result = run_in_process("fmc.registry", "action=import", f"input={tmp_path}",
                            f"output={tmp_path / 'm.zip'}")
    assert_user_error(result, "action=import: choose one of export (conf/registry.yaml)")
