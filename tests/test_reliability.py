"""Reliability and security of the commands (issue 8); docs/reliability.md tabulates it.

Four parts, each through a command's entry point:

1. bad inputs: every command on a table of broken files and values ends with exit code 2 and one
   line naming the file and the problem (no traceback), or goes on with a logged warning where
   that is the design; a failing case never leaves a file under its final name;
2. killed runs: real SIGKILLs mid-file, mid-volume and mid-training, then the same command again;
3. untrusted files: checkpoints that would run code when unpickled, hyper-parameters carrying a
   ``_target_``, output names that try to leave the output folder;
4. concurrency: two ``fmc.prepare`` runs on the same folders, a parallel training sweep.

Killed runs, concurrent runs and Hydra's run folder need the real command line: those tests start
``python -m fmc.<command>`` in a subprocess (:func:`fmc`, :func:`start`), as a user runs it. The
others call the command's ``main`` -- the same Hydra entry point and one-line error reporting
(exit code 2) -- in this process on the config the command line composes
(``tests.conftest.run_in_process``), without seconds of interpreter start-up per case; each
command's exit-2 contract is also checked through the real command line in its own test file.
Bad files that a command reports together share one run. The slow-marked tests
(``make test-full``) add what takes longer.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

from fmc.io.h5 import is_complete, read_attrs
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import read_volume, write_volume
from fmc.preprocessing.conversion import convert_tiff
from fmc.simulation.synth import write_pair
from tests.conftest import (
    REPO,
    TINY_RUN,
    InProcessResult,
    assert_user_error,
    run_command,
    run_in_process,
    save_tiny_checkpoint,
)

SHAPE = (24, 48, 48)
SMALL = (16, 32, 32)  # one tile of the tiny checkpoint's 16x32x32 patch: fast predictions
META = VolumeMeta(study=1, content="nucleus", spacing_zyx=(3.0, 0.585, 0.585))
# What a hostile pickle would run: os.system's qualified name as torch reports it.
SYSTEM = f"{os.system.__module__}.system"

# Broken volumes, by kind: the fragment fmc's message carries (tests/test_reliability.py and
# docs/reliability.md). Unreadable ones stop every command; the others are warned about.
UNREADABLE = {"2d": "is a 2D image", "4d": "non-singleton axes",
              "truncated": "truncated or corrupt", "text": "not a readable TIFF file"}
NAN = {"nan": "NaN or infinite"}
DEGENERATE = {"constant": "constant volume", "no_metadata": "no voxel size and no known study",
              "study_abc": "study 'abc' is not an integer"}


def fmc(module: str, *overrides: str, cwd: Path, env: dict | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """``run_command`` (a subprocess) from a scratch folder, so Hydra's run folders stay out of
    the repo."""
    return run_command(module, *overrides, cwd=cwd, env=env, timeout=timeout)


def output_of(result: subprocess.CompletedProcess | InProcessResult) -> str:
    return result.stdout + result.stderr


def line_with(log: str, *fragments: str) -> str:
    """The first log line holding every fragment (the assertion names what was missing)."""
    for line in log.splitlines():
        if all(fragment in line for fragment in fragments):
            return line
    raise AssertionError(f"no line with {fragments} in:\n{log[-4000:]}")


def parts_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.part")) if folder.exists() else []


def write_bad_volume(kind: str, path: Path, view: np.ndarray) -> Path:
    """One broken or degenerate version of ``view`` at ``path`` (see UNREADABLE, NAN, DEGENERATE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "2d":
        tifffile.imwrite(path, view[0])
    elif kind == "4d":
        tifffile.imwrite(path, np.stack([view, view]), photometric="minisblack")
    elif kind == "nan":
        broken = view.astype(np.float32)
        broken[1, 2, 3], broken[2, 3, 4] = np.nan, np.inf
        write_volume(path, broken, META)
    elif kind == "constant":
        write_volume(path, np.full(view.shape, 7, np.uint16), META)
    elif kind == "no_metadata":
        tifffile.imwrite(path, view)  # no study, no channel, no voxel size
    elif kind == "study_abc":
        write_volume(path, view, VolumeMeta(content="nucleus", spacing_zyx=META.spacing_zyx,
                                            original={"study": "abc"}))
    elif kind == "truncated":
        write_volume(path, view, META)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("a text file, not a TIFF\n")
    else:
        raise ValueError(kind)
    return path


# ----------------------------------------------------------------------------------------------
# Shared inputs
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """One synthetic study-1 nucleus (view, fused) pair of 24x48x48 voxels."""
    return write_pair(tmp_path_factory.mktemp("pair"), 1, "nucleus", 0, shape=SHAPE, scale=3.0)


@pytest.fixture(scope="module")
def view(pair) -> np.ndarray:
    return read_volume(pair[0])[0]


@pytest.fixture(scope="module")
def small_views(tmp_path_factory) -> dict[str, Path]:
    """A 16x32x32 view, and the degenerate / NaN versions of it, in their own folders."""
    root = tmp_path_factory.mktemp("small")
    angle, _ = write_pair(root / "pair", 1, "nucleus", 0, shape=SMALL, scale=6.0)
    small = read_volume(angle)[0]
    views = {"good": angle}
    for kind in [*DEGENERATE, *NAN]:
        views[kind] = write_bad_volume(kind, root / kind / f"image_{kind}.tif", small)
    return views


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained residual model (the identity), patch 16x32x32."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def copy_root(h5_root: Path, destination: Path) -> Path:
    shutil.copytree(h5_root, destination)
    return destination


class Hostile:
    """Unpickled without restriction, this object runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path, nested: bool = True) -> Path:
    """A .ckpt whose unpickling would create ``marker``: alone, or inside a Lightning-like dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = Hostile(marker)
    if nested:
        payload = {"state_dict": {"net.weight": torch.zeros(1)}, "epoch": 0, "global_step": 0,
                   "pytorch-lightning_version": "2.6.6",
                   "hyper_parameters": {"channels": ["raw_image"], "study": 1,
                                        "content": "nucleus", "hook": payload}}
    torch.save(payload, path)
    return path


# ----------------------------------------------------------------------------------------------
# 1. Bad inputs
# ----------------------------------------------------------------------------------------------
def test_prepare_reports_every_bad_file_and_converts_the_rest(pair, view, tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for source in pair:  # one good pair
        shutil.copy(source, raw / source.name)
    names = {}
    for index, kind in enumerate([*UNREADABLE, *NAN, *DEGENERATE], start=1):
        names[kind] = write_bad_volume(kind, raw / f"image_{index}_nucleus_angle.tif", view).name
    # A pair whose fused volume lost 8 rows: each file converts, the pair cannot train.
    write_volume(raw / "image_9_nucleus_angle.tif", view, META)
    write_volume(raw / "image_9_nucleus_fused.tif", view[:, :40], META)
    out = tmp_path / "h5"
    result = run_in_process("fmc.prepare", f"input={raw}", f"output={out}", "progress=false",
                            cwd=tmp_path)
    assert_user_error(result, "5 of 12 file(s) failed", "1 pair(s) unusable")
    log = output_of(result)
    for kind, fragment in {**UNREADABLE, **NAN}.items():
        line_with(log, names[kind], fragment)
        assert not (out / names[kind].replace(".tif", ".h5")).exists()
    for kind, fragment in DEGENERATE.items():  # warned about, converted
        line_with(log, names[kind], fragment)
        assert is_complete(out / names[kind].replace(".tif", ".h5"))
    unknown = read_attrs(out / names["no_metadata"].replace(".tif", ".h5"))
    assert (unknown["study"], unknown["content"]) == (None, None)
    assert unknown["spacing_source"] == "assumed 1 µm"
    assert read_attrs(out / names["study_abc"].replace(".tif", ".h5"))["study"] is None
    line_with(log, "image_9_nucleus_angle.tif [24, 48, 48]", "[24, 40, 48]", "differ in shape")
    assert is_complete(out / "image_9_nucleus_fused.h5")
    listed = "".join(p.read_text() for p in (out / "lists").glob("*.csv"))
    assert "image_0_nucleus_angle.h5" in listed and "image_9" not in listed
    assert parts_in(out) == []


def test_prepare_into_an_unwritable_folder(pair, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    result = run_in_process("fmc.prepare", f"input={pair[0].parent}", f"output={blocker / 'h5'}",
                            "progress=false", cwd=tmp_path)
    assert_user_error(result, f"output={blocker / 'h5'}", "cannot write there")


@pytest.mark.parametrize("override, message", [
    ("n=abc", "n=abc: give a whole number >= 1"),
    ("n=0", "n=0: give a whole number >= 1"),
    ("start=-1", "start=-1: give a whole number >= 0"),
    ("seed=abc", "seed=abc: give a whole number >= 0"),
    ("scale=0", "scale > 0"),
    ("study=abc", "unknown study 'abc'"),
])
def test_synth_bad_values(tmp_path: Path, override, message):
    result = run_in_process("fmc.synth", f"output={tmp_path / 'o'}", "shape=[24,48,48]", override,
                            cwd=tmp_path)
    assert_user_error(result, message)
    assert not (tmp_path / "o").exists()


def test_synth_into_an_unwritable_folder(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_in_process("fmc.synth", f"output={blocker / 'o'}", "shape=[24,48,48]", "scale=3",
                            cwd=tmp_path)
    assert_user_error(result, "a_file/o", "cannot write there")


@pytest.mark.parametrize("command, args", [
    ("fmc.train", ["hydra.run.dir={blocker}/run"]),
    ("fmc.synth", ["--multirun", "output={tmp}/o", "hydra.sweep.dir={blocker}/sweep"]),
])
def test_a_run_folder_under_a_file_is_a_user_error(tmp_path: Path, command, args):
    """Hydra makes its run folder before fmc's code runs: checked by fmc.run_folder."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = [a.format(blocker=blocker, tmp=tmp_path) for a in args]
    result = fmc(command, *args, cwd=tmp_path)
    assert_user_error(result, f"{blocker}", "is a file, not a folder", "cannot create the run "
                      "folder")


@pytest.mark.parametrize("command, case, message", [
    ("fmc.predict", "missing", "input={path}: no such file or folder"),
    ("fmc.predict", "empty", "input={path}: no .tif/.tiff (or .h5, .ome.zarr) volume to predict"),
    pytest.param("fmc.challenge", "missing", "input={path}: no such folder",
                 marks=pytest.mark.slow),
])
def test_a_missing_or_empty_input_is_named(checkpoint, tmp_path: Path, command, case, message):
    path = tmp_path / "inputs"
    if case == "empty":
        path.mkdir()
    out = tmp_path / "out"
    if command == "fmc.predict":
        args = [f"ckpt={checkpoint}"]
    else:
        (tmp_path / "registry").mkdir()
        shutil.copy(checkpoint, tmp_path / "registry" / "tiny.ckpt")
        args = [f"registry={tmp_path / 'registry'}"]
    result = run_in_process(command, *args, f"input={path}", f"output={out}", cwd=tmp_path)
    assert_user_error(result, message.format(path=path))
    assert not out.exists()


def test_predict_names_every_unreadable_input_before_writing(pair, view, checkpoint,
                                                             tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(pair[0], inputs / pair[0].name)
    names = {kind: write_bad_volume(kind, inputs / f"bad_{kind}.tif", view).name
             for kind in UNREADABLE}
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={inputs}", f"output={out}",
                            "progress=false", cwd=tmp_path)
    assert_user_error(result, "4 of 5 input(s) cannot be predicted")
    for kind, fragment in UNREADABLE.items():
        line_with(output_of(result), names[kind], fragment)
    assert not out.exists()  # inputs are all opened before the output folder is made


@pytest.mark.slow  # the same volumes go through prediction in test_challenge_answers_every_case_it_can
def test_predict_degenerate_volumes_are_warned_about_and_predicted(small_views, checkpoint,
                                                                   tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for kind in DEGENERATE:
        shutil.copy(small_views[kind], inputs)
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={inputs}", f"output={out}",
                            "progress=false", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    for kind, fragment in DEGENERATE.items():
        line_with(output_of(result), small_views[kind].name, fragment)
        prediction, _ = read_volume(out / small_views[kind].name)
        assert prediction.shape == SMALL and np.isfinite(prediction).all()


@pytest.mark.slow  # NaN also stops the prediction in test_challenge_answers_every_case_it_can
def test_predict_refuses_nan_and_inf(small_views, checkpoint, tmp_path: Path):
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={small_views['nan']}",
                            f"output={out}", "progress=false", cwd=tmp_path)
    assert_user_error(result, small_views["nan"].name, NAN["nan"])
    assert list(out.iterdir()) == []  # created and proved writable, nothing in it


def test_predict_refuses_broken_h5_inputs(pair, checkpoint, tmp_path: Path):
    inputs = tmp_path / "in"
    convert_tiff(pair[0], inputs)
    truncated = inputs / "truncated_angle.h5"
    data = (inputs / "image_0_nucleus_angle.h5").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (inputs / "text_angle.h5").write_text("not HDF5")
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={inputs}",
                            f"output={tmp_path / 'out'}", "progress=false", cwd=tmp_path)
    assert_user_error(result, "2 of 3 input(s) cannot be predicted")
    for name in ("truncated_angle.h5", "text_angle.h5"):
        line_with(output_of(result), name, "not a complete fmc H5 file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, message", [
    ("bare_state_dict", "bare state_dict"),
    pytest.param("other_weights", "its weights do not fit the network its hyper-parameters "
                 "describe", marks=pytest.mark.slow),
])
def test_predict_refuses_a_checkpoint_of_another_network(pair, checkpoint, tmp_path: Path, kind,
                                                         message):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "bare_state_dict":
        torch.save(torch.nn.Conv3d(2, 4, 3).state_dict(), path)
    else:  # a real fmc checkpoint whose hyper-parameters were edited to another width
        stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
        stored["hyper_parameters"] = {**stored["hyper_parameters"], "features": 8}
        torch.save(stored, path)
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={path}", f"input={pair[0]}", f"output={out}",
                            cwd=tmp_path)
    assert_user_error(result, str(path), message)
    assert not out.exists()


@pytest.mark.parametrize("case, message", [
    pytest.param("missing_root", "no such folder", marks=pytest.mark.slow),
    ("truncated_h5", "not a readable HDF5 file"),
    pytest.param("text_h5", "not a readable HDF5 file", marks=pytest.mark.slow),
    pytest.param("mismatched_pair", "angle and fused volumes differ in shape",
                 marks=pytest.mark.slow),
    pytest.param("empty_root", "split list 'study1_nucleus_train.csv' not found",
                 marks=pytest.mark.slow),
])
def test_train_refuses_bad_data_before_the_first_step(h5_root: Path, tmp_path: Path, case,
                                                      message):
    root = tmp_path / "root"
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "empty_root":
        root.mkdir()
    else:
        copy_root(h5_root, root)
        train_list = (root / "lists" / "study1_nucleus_train.csv").read_text().split(";")
        angle, fused = root / train_list[0], root / train_list[1].strip()
        if case == "truncated_h5":
            data = angle.read_bytes()
            angle.write_bytes(data[: len(data) // 2])
        elif case == "text_h5":
            fused.write_text("not HDF5")
        else:
            with h5py.File(fused, "a") as handle:
                image = handle["data/raw_image"][...]
                del handle["data/raw_image"]
                handle["data/raw_image"] = image[:, :40]
    run = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={root}", run_dir=run)
    assert_user_error(result, message)
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("kind, message", [
    ("other_network", "its network differs from this run's"),
    pytest.param("bare_state_dict", "bare state_dict", marks=pytest.mark.slow),
    pytest.param("text", "not an fmc checkpoint", marks=pytest.mark.slow),
])
def test_train_refuses_a_checkpoint_it_cannot_resume(h5_root: Path, tmp_path: Path, kind,
                                                     message):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "other_network":  # trained 8 features wide; this run builds 4
        save_tiny_checkpoint(path, features=8, depth=2)
    elif kind == "bare_state_dict":
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    else:
        path.write_text("not a checkpoint")
    run = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", f"ckpt={path}",
                            run_dir=run)
    assert_user_error(result, str(path), message)
    if kind == "other_network":
        assert "features=8 (this run: 4)" in result.stderr
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["nan", "2d", "4d", "unwritable_out"])
def test_evaluate_bad_raw_volumes(pair, view, tmp_path: Path, kind):
    raw = tmp_path / "raw"
    raw.mkdir()
    for source in pair:
        shutil.copy(source, raw / source.name)
    out = tmp_path / "out"
    if kind == "unwritable_out":
        out.write_text("a file")
        expected = (f"output={out}", "cannot write there")
    else:
        write_bad_volume(kind, raw / pair[0].name, view)
        expected = (pair[0].name, {**UNREADABLE, **NAN}[kind])
    result = run_in_process("fmc.evaluate", f"input={raw}", f"output={out}", "baseline=identity",
                            "progress=false", cwd=tmp_path)
    assert_user_error(result, *expected)
    if kind == "unwritable_out":
        assert out.read_text() == "a file"
    else:
        assert not (out / "per_image.csv").exists() and not (out / "summary.csv").exists()


def test_evaluate_constant_or_unlabelled_pairs_are_scored_with_a_status(pair, view,
                                                                        tmp_path: Path):
    raw = tmp_path / "raw"
    flat = np.full(view.shape, 7, np.uint16)
    write_volume(raw / "image_0_nucleus_angle.tif", flat, META)  # input == ground truth
    write_volume(raw / "image_0_nucleus_fused.tif", flat, META)
    tifffile.imwrite(raw / "image_1_nucleus_angle.tif", view)  # no metadata at all
    tifffile.imwrite(raw / "image_1_nucleus_fused.tif", read_volume(pair[1])[0])
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw}", f"output={out}", "baseline=gaussian",
                            "progress=false", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    rows = (out / "per_image.csv").read_text()
    line_with(rows, "image_0_nucleus_angle.tif", "undefined (input equals ground truth)")
    assert re.search(r"image_1_nucleus_angle\.tif,,nucleus", rows), rows  # study unknown


def test_challenge_answers_every_case_it_can(small_views, checkpoint, view, tmp_path: Path):
    """One bad case must not lose the others: unreadable inputs get no file, the rest do."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for kind in [*DEGENERATE, *NAN]:
        shutil.copy(small_views[kind], inputs / f"case_{kind}.tif")
    for kind in UNREADABLE:
        write_bad_volume(kind, inputs / f"case_{kind}.tif", view)
    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copy(checkpoint, registry / "tiny.ckpt")
    (registry / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, "
                                          "ckpt: tiny.ckpt}\n")
    out = tmp_path / "out"
    result = run_in_process("fmc.challenge", f"input={inputs}", f"output={out}",
                            f"registry={registry}", cwd=tmp_path)
    assert_user_error(result, "no output for", *[f"case_{kind}.tif" for kind in UNREADABLE])
    log = output_of(result)
    assert "3 of 8 case(s) predicted" in log and "1 written as their input" in log
    for kind, fragment in UNREADABLE.items():
        line_with(log, f"case_{kind}.tif", fragment)
        assert not (out / f"case_{kind}.tif").exists()
    line_with(log, "case_nan.tif: prediction failed", NAN["nan"])
    np.testing.assert_array_equal(read_volume(out / "case_nan.tif")[0],
                                  read_volume(inputs / "case_nan.tif")[0])
    for kind, fragment in DEGENERATE.items():
        line_with(log, f"case_{kind}.tif", fragment)
        assert read_volume(out / f"case_{kind}.tif")[0].shape == SMALL
    assert parts_in(out) == []


def test_report_lists_a_broken_run_and_names_a_broken_summary(tmp_path: Path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / "checkpoints").mkdir(parents=True)
    (sweep / "0" / "metrics.json").write_text("{not json")
    result = run_in_process("fmc.report", f"sweep={sweep}", "montage=false", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    line_with((sweep / "report.csv").read_text(), "incomplete", "metrics.json: not readable as "
              "JSON")
    scores = sweep / "0" / "test_scores"
    scores.mkdir()
    (scores / "summary.csv").write_text("a,b\n1,2\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_in_process("fmc.report", f"sweep={sweep}", "montage=false", cwd=tmp_path)
    assert_user_error(result, "summary.csv: not an fmc.evaluate summary")
    (scores / "summary.csv").unlink()
    result = run_in_process("fmc.report", f"sweep={sweep}", f"output={blocker / 'r'}",
                            "montage=false", cwd=tmp_path)
    assert_user_error(result, "a_file/r", "cannot write there")


# ----------------------------------------------------------------------------------------------
# 2. Killed runs
# ----------------------------------------------------------------------------------------------
def start(module: str, *overrides: str, cwd: Path, log: Path,
          env: dict | None = None) -> subprocess.Popen:
    """``python -m module`` in the background; its output goes to ``log`` (never a full pipe)."""
    environment = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    environment.pop("FMC_VERBOSE", None)
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=cwd,
                               env=environment, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return process


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], log: Path,
              timeout: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every few milliseconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            return
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before the kill:\n{log.read_text()[-3000:]}")
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"no sign of progress in {timeout} s:\n{log.read_text()[-3000:]}")


def h5_contents(folder: Path) -> dict[str, dict]:
    """Every dataset and attribute of every H5 in ``folder`` (fmc_version and all)."""
    contents = {}
    for path in sorted(folder.glob("*.h5")):
        arrays: dict[str, np.ndarray] = {}

        def keep(name: str, item, into: dict = arrays) -> None:
            if isinstance(item, h5py.Dataset):
                into[name] = item[...]

        with h5py.File(path, "r") as handle:
            handle.visititems(keep)
        contents[path.name] = {"arrays": arrays, "attrs": read_attrs(path)}
    return contents


def assert_same_h5(first: dict, second: dict) -> None:
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name]["attrs"] == second[name]["attrs"], name
        assert sorted(first[name]["arrays"]) == sorted(second[name]["arrays"]), name
        for key, array in first[name]["arrays"].items():
            np.testing.assert_array_equal(array, second[name]["arrays"][key], err_msg=name)


@pytest.fixture(scope="module")
def slow_to_write(tmp_path_factory) -> dict:
    """Three 48x192x192 pairs and their uninterrupted gzip conversion (gzip: slow writes,
    so a temporary file lives long enough to be caught)."""
    root = tmp_path_factory.mktemp("kill_prepare")
    for index in range(3):
        write_pair(root / "raw", 1, "nucleus", index, shape=(48, 192, 192), scale=2.0)
    result = run_in_process("fmc.prepare", f"input={root / 'raw'}",
                            f"output={root / 'reference'}", "compression=gzip", "progress=false",
                            cwd=root)
    assert result.returncode == 0, output_of(result)[-3000:]
    return {"raw": root / "raw", "reference": h5_contents(root / "reference"),
            "lists": {p.name: p.read_text() for p in (root / "reference" / "lists").glob("*")}}


def test_prepare_killed_mid_file_then_rerun_equals_an_uninterrupted_run(slow_to_write,
                                                                        tmp_path: Path):
    out = tmp_path / "h5"
    log = tmp_path / "killed.log"
    process = start("fmc.prepare", f"input={slow_to_write['raw']}", f"output={out}",
                    "compression=gzip", "progress=false", cwd=tmp_path, log=log)
    kill_when(process, lambda: bool(list(out.glob(".*.h5.*.part"))), log)
    assert list(out.glob(".*.h5.*.part")), "the kill came after the rename"
    # Whatever carries a final name is complete: the half-written file has a temporary name.
    for path in out.glob("*.h5"):
        assert is_complete(path), path
    result = fmc("fmc.prepare", f"input={slow_to_write['raw']}", f"output={out}",
                 "compression=gzip", "progress=false", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    line_with(output_of(result), ".h5.", ".part, left by a killed run")
    assert parts_in(out) == []
    assert_same_h5(h5_contents(out), slow_to_write["reference"])
    assert {p.name: p.read_text() for p in (out / "lists").glob("*")} == slow_to_write["lists"]


def test_predict_killed_mid_volume_leaves_no_output_and_a_rerun_writes_it(pair, checkpoint,
                                                                          tmp_path: Path):
    out = tmp_path / "out"
    final = out / pair[0].name
    args = [f"ckpt={checkpoint}", f"input={pair[0]}", f"output={out}", "patch=[16,32,32]",
            "batch_size=1", "progress=false"]
    log = tmp_path / "killed.log"
    process = start("fmc.predict", *args, cwd=tmp_path, log=log)
    temporary = f".{final.name}.*.part"
    kill_when(process, lambda: bool(list(out.glob(temporary))), log)
    assert not final.exists() and len(list(out.glob(temporary))) == 1
    result = fmc("fmc.predict", *args, cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert parts_in(out) == []  # the dead run's temporary file was removed
    assert sorted(p.name for p in out.iterdir()) == [pair[0].name]
    from fmc.core.normalization import percentile_normalize

    np.testing.assert_allclose(read_volume(final)[0], percentile_normalize(read_volume(pair[0])[0]),
                               atol=1e-4)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(h5_root: Path,
                                                                        tmp_path: Path):
    """Kill after the first checkpoints, resume with ckpt=last: same weights, bit for bit.

    Each tiny epoch is one step, so every step ends with a validation and a last.ckpt.
    """
    steps = 6
    args = [*[a for a in TINY_RUN if not a.startswith("trainer.max_steps=")],
            f"trainer.max_steps={steps}", "trainer.deterministic=true", f"data.root={h5_root}"]
    reference = fmc("fmc.train", *args, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, output_of(reference)[-3000:]
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"

    def saved_step() -> int:
        try:
            return int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
        except Exception:  # noqa: BLE001 - not there yet, or being replaced
            return -1

    log = tmp_path / "killed.log"
    process = start("fmc.train", *args, f"hydra.run.dir={run}", cwd=tmp_path, log=log)
    kill_when(process, lambda: saved_step() >= 2, log)
    killed_at = saved_step()
    assert 2 <= killed_at < steps, killed_at
    resumed = fmc("fmc.train", *args, f"hydra.run.dir={run}", "ckpt=last", cwd=tmp_path)
    assert resumed.returncode == 0, output_of(resumed)[-3000:]
    assert f"resuming from {last} (step {killed_at})" in output_of(resumed)
    assert saved_step() == steps
    expected = _weights(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    got = _weights(last)
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)


# ----------------------------------------------------------------------------------------------
# 3. Untrusted files
# ----------------------------------------------------------------------------------------------
# torch would unpickle anything with this set unless fmc passes weights_only=True itself.
UNSAFE_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def _refused(result: InProcessResult, path: Path, marker: Path) -> None:
    assert_user_error(result, str(path), "refused", SYSTEM, "fmc loads checkpoints as data only")
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("nested", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_predict_refuses_a_checkpoint_that_would_run_code(pair, tmp_path: Path, nested):
    marker = tmp_path / "PWNED"
    evil = hostile_checkpoint(tmp_path / "model.ckpt", marker, nested=nested)
    out = tmp_path / "out"
    result = run_in_process("fmc.predict", f"ckpt={evil}", f"input={pair[0]}", f"output={out}",
                            cwd=tmp_path, env=UNSAFE_ENV)
    _refused(result, evil, marker)
    assert not out.exists()


@pytest.mark.parametrize("layout", ["models_yaml", "sweep_folder"])
def test_a_registry_refuses_a_checkpoint_that_would_run_code(pair, tmp_path: Path, layout):
    marker = tmp_path / "PWNED"
    registry = tmp_path / "registry"
    if layout == "models_yaml":
        evil = hostile_checkpoint(registry / "evil.ckpt", marker)
        (registry / "models.yaml").write_text("models:\n  - {ckpt: evil.ckpt}\n")  # facts read
    else:
        evil = hostile_checkpoint(registry / "0" / "checkpoints" / "last.ckpt", marker)
    result = run_in_process("fmc.predict", "ckpt=auto", f"registry={registry}", f"input={pair[0]}",
                            f"output={tmp_path / 'out'}", cwd=tmp_path, env=UNSAFE_ENV)
    _refused(result, evil, marker)


def test_challenge_refuses_a_checkpoint_that_would_run_code(pair, tmp_path: Path):
    marker = tmp_path / "PWNED"
    registry = tmp_path / "registry"
    evil = hostile_checkpoint(registry / "evil.ckpt", marker)
    (registry / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, "
                                          "ckpt: evil.ckpt}\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(pair[0], inputs / "image_7.tif")
    out = tmp_path / "out"
    result = run_in_process("fmc.challenge", f"input={inputs}", f"output={out}",
                            f"registry={registry}", cwd=tmp_path, env=UNSAFE_ENV)
    _refused(result, evil, marker)
    assert not out.exists()


def test_train_refuses_to_resume_from_a_checkpoint_that_would_run_code(h5_root: Path,
                                                                       tmp_path: Path):
    marker = tmp_path / "PWNED"
    evil = hostile_checkpoint(tmp_path / "last.ckpt", marker)
    run = tmp_path / "run"
    result = run_in_process("fmc.train", *TINY_RUN, f"data.root={h5_root}", f"ckpt={evil}",
                            run_dir=run, env=UNSAFE_ENV)
    _refused(result, evil, marker)
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_hyper_parameters_are_never_instantiated(pair, checkpoint, tmp_path: Path):
    """A ``_target_`` in a checkpoint's hyper-parameters is data: refused, never called."""
    marker = tmp_path / "PWNED"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    target = {"_target_": "os.system", "command": f"touch {marker}"}
    stored["hyper_parameters"] = {**stored["hyper_parameters"], **target, "loss_kwargs": target}
    path = tmp_path / "targets.ckpt"
    torch.save(stored, path)
    result = run_in_process("fmc.predict", f"ckpt={path}", f"input={pair[0]}",
                            f"output={tmp_path / 'o'}", cwd=tmp_path)
    assert_user_error(result, str(path), "not an fmc checkpoint", "_target_")
    assert not marker.exists()


def test_no_fmc_code_instantiates_configs():
    """Nothing in fmc/ calls Hydra's instantiate: hyper-parameters stay keyword arguments.

    The ``_target_`` entries in conf/ are fmc's own Hydra callback (conf/hydra/default.yaml)
    and the Optuna sampler that Hydra's sweeper builds (conf/hparams_search/optuna.yaml).
    """
    for path in sorted((REPO / "fmc").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                assert name != "instantiate", f"{path.name}:{node.lineno}"
    targets = [str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.yaml")
               if "_target_" in p.read_text(encoding="utf-8")]
    assert sorted(targets) == ["conf/hparams_search/optuna.yaml", "conf/hydra/default.yaml"]


def _h5_with_source(view: Path, folder: Path, name: str, source: str) -> Path:
    """The prepared H5 of ``view``, renamed, whose ``source`` attribute says ``source``."""
    convert_tiff(view, folder)
    path = (folder / view.with_suffix(".h5").name).rename(folder / name)
    with h5py.File(path, "a") as handle:
        handle.attrs["source"] = source
    return path


def test_output_names_from_metadata_stay_in_the_output_folder(small_views, checkpoint,
                                                             tmp_path: Path):
    inputs = tmp_path / "deep" / "er" / "in"
    _h5_with_source(small_views["good"], inputs, "a_angle.h5", "../../escaped.tif")
    outside = tmp_path / "absolute.tif"
    _h5_with_source(small_views["good"], inputs, "b_angle.h5", str(outside))
    out = tmp_path / "deep" / "er" / "out"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("must survive")
    (out / "escaped.tif").symlink_to(precious)  # a planted link at the output name
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={inputs}", f"output={out}",
                            "progress=false", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["absolute.tif", "escaped.tif"]
    assert not (out / "escaped.tif").is_symlink()  # replaced, not written through
    assert precious.read_text() == "must survive"
    assert not outside.exists() and not (tmp_path / "deep" / "escaped.tif").exists()
    assert not (tmp_path / "escaped.tif").exists()


@pytest.mark.slow
def test_an_output_name_that_is_no_file_name_is_refused(small_views, checkpoint, tmp_path: Path):
    inputs = tmp_path / "in"
    _h5_with_source(small_views["good"], inputs, "a_angle.h5", "..")
    result = run_in_process("fmc.predict", f"ckpt={checkpoint}", f"input={inputs}",
                            f"output={tmp_path / 'out'}", "progress=false", cwd=tmp_path)
    assert_user_error(result, "output name '..' is not a plain file name")
    # Refused before any work: not even the output folder is made.
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# 4. Concurrency
# ----------------------------------------------------------------------------------------------
def test_two_prepare_runs_on_the_same_folders(slow_to_write, tmp_path: Path):
    """No lock needed: each writer has its own temporary name, the rename is atomic and both
    write the same bytes, so whichever rename comes last leaves a complete, identical file."""
    out = tmp_path / "h5"
    args = [f"input={slow_to_write['raw']}", f"output={out}", "compression=gzip",
            "progress=false"]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = [start("fmc.prepare", *args, cwd=tmp_path, log=log) for log in logs]
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert parts_in(out) == []
    assert_same_h5(h5_contents(out), slow_to_write["reference"])
    assert {p.name: p.read_text() for p in (out / "lists").glob("*")} == slow_to_write["lists"]


@pytest.mark.slow
def test_parallel_sweep_jobs_never_share_a_checkpoint_folder(h5_root: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = fmc("fmc.train", "--multirun", *TINY_RUN, f"data.root={h5_root}",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.features=4,8",
                 "trainer.max_steps=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, output_of(result)[-3000:]
    folders = {}
    for job, features in (("0", 4), ("1", 8)):
        checkpoints = sweep / job / "checkpoints"
        assert (checkpoints / "last.ckpt").is_file()
        for path in checkpoints.glob("*.ckpt"):  # every file of the folder is this job's
            stored = torch.load(path, map_location="cpu", weights_only=True)
            assert stored["hyper_parameters"]["features"] == features, path
            assert stored["global_step"] in (1, 2)
        folders[job] = checkpoints.resolve()
    assert folders["0"] != folders["1"]


@pytest.mark.slow
def test_two_trainings_never_share_one_run_folder(h5_root: Path, tmp_path: Path):
    """Two runs given (or defaulting to) the same folder: the second is refused, not mixed in."""
    run = tmp_path / "run"
    args = [*[a for a in TINY_RUN if not a.startswith("trainer.max_steps=")],
            "trainer.max_steps=6", f"data.root={h5_root}", f"hydra.run.dir={run}"]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = [start("fmc.train", *args, cwd=tmp_path, log=log) for log in logs]
    codes = [process.wait(timeout=600) for process in processes]
    assert sorted(codes) == [0, 2], [log.read_text()[-2000:] for log in logs]
    refused = logs[codes.index(2)].read_text()
    assert "another fmc.train (pid" in refused and "is writing into this run folder" in refused
    assert "Traceback" not in refused
    stored = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert stored["global_step"] == 6


# ----------------------------------------------------------------------------------------------
# The documentation follows the tests
# ----------------------------------------------------------------------------------------------
def test_docs_name_every_test_of_this_file():
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    names = re.findall(r"^def (test_\w+)", Path(__file__).read_text(encoding="utf-8"), re.M)
    missing = [name for name in names if name not in text]
    assert missing == []
