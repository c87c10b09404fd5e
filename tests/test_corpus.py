"""A corpus of malformed inputs and config values, each given to an fmc command.

Every case asserts the same three things (docs/reliability.md, "Conventions"):

- the exit code is 0 or 2, and 2 comes with exactly one line ``fmc.<command>: error: <message>``
  on stderr (a user error);
- neither stdout nor stderr holds ``Traceback``, and the command raised nothing but
  ``SystemExit`` (:func:`tests.conftest.run_in_process` re-raises anything else: a user would
  see a traceback; the harness records its type, message and where it was raised);
- the inputs are unchanged: every entry under the case's input folders (files by sha256,
  symbolic links by their target, never followed) is the same after the run as before.

Whether a case should be 0 or 2 is not asserted here: the command's own tests say which. The
corpus only asks that no input ever makes a command crash, hang or touch its inputs.

Parts: A. config values Hydra accepts but a command may not be able to use; B. malformed files
(volumes, split lists, H5 files, checkpoints); C. model registries and packages; D. OME-Zarr
stores. The inputs they share (a tiny checkpoint, a 16x32x32 view, prepared H5 data) are made
once per module.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import struct
import subprocess
import traceback
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra.errors import HydraException

from tests.conftest import (
    TINY_RUN,
    fused_as_predictions,
    run_command,
    run_in_process,
    save_tiny_checkpoint,
)

SMALL = (16, 32, 32)  # one tile of the tiny checkpoint's 16x32x32 patch: fast predictions
ROOT = os.geteuid() == 0
# A case that has not ended after this many seconds has hung (a tiny training takes ~5 s).
TIMEOUT_S = {"fmc.train": 120}
DEFAULT_TIMEOUT_S = 60


# ----------------------------------------------------------------------------------------------
# The harness
# ----------------------------------------------------------------------------------------------
class CaseTimeout(BaseException):
    """Raised in the command by SIGALRM (a BaseException, so no ``except Exception`` in fmc
    swallows it)."""


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (itself included): files by sha256, links by their target
    (never followed), folders by their name; unreadable files by size and mtime."""
    entries: dict[str, str] = {}
    paths = [folder]
    if folder.is_dir() and not folder.is_symlink():
        for top, dirs, files in os.walk(folder, followlinks=False):
            paths += [Path(top) / name for name in [*dirs, *files]]
    for path in paths:
        key = str(path.relative_to(folder.parent))
        try:
            info = path.lstat()
        except FileNotFoundError:
            entries[key] = "missing"
            continue
        if stat.S_ISLNK(info.st_mode):
            entries[key] = f"link -> {os.readlink(path)}"
        elif stat.S_ISDIR(info.st_mode):
            entries[key] = "folder"
        elif stat.S_ISREG(info.st_mode):
            try:
                entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:
                entries[key] = f"unreadable, {info.st_size} bytes, mtime {info.st_mtime_ns}"
        else:
            entries[key] = f"mode {oct(info.st_mode)}"
    return entries


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{key}: {before.get(key, 'absent')} -> {after.get(key, 'absent')}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _alarm(signum, frame):
    raise CaseTimeout


def real_command_line(module: str, *overrides: str, cwd: Path | None, run_dir: Path | None,
                      env: dict | None) -> subprocess.CompletedProcess:
    """``python -m module overrides`` in a subprocess, its Hydra run folder in ``run_dir`` (else
    under ``cwd``)."""
    folder = cwd if cwd is not None else run_dir
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    extra = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    return run_command(module, *overrides, *extra, cwd=folder, env=env,
                       timeout=TIMEOUT_S.get(module, DEFAULT_TIMEOUT_S))


def corpus_run(module: str, *overrides: str, inputs: list[Path], cwd: Path | None = None,
               run_dir: Path | None = None, env: dict | None = None) -> None:
    """Run ``module`` on ``overrides`` in this process and assert the corpus contract."""
    command = " ".join(["python -m", module, *overrides])
    before = {folder: snapshot(folder) for folder in inputs}
    seconds = TIMEOUT_S.get(module, DEFAULT_TIMEOUT_S)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    result, problems = None, []
    try:
        try:
            result = run_in_process(module, *overrides, cwd=cwd, run_dir=run_dir, env=env)
        except HydraException:
            # Hydra's compose API refused the command line before fmc saw it (a key that does
            # not exist in conf/): what a user gets is what the real command line does with it.
            signal.alarm(0)
            result = real_command_line(module, *overrides, cwd=cwd, run_dir=run_dir, env=env)
    except (CaseTimeout, subprocess.TimeoutExpired):
        problems.append(f"did not end within {seconds} s")
    except Exception as error:  # a traceback for a user
        frames = traceback.format_exception(type(error), error, error.__traceback__)
        where = "".join(frames[-6:-1]).rstrip()
        problems.append(f"uncaught {type(error).__name__}: {error}\n{where}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if result is not None:
        output = result.stdout + result.stderr
        if result.returncode not in (0, 2):
            problems.append(f"exit code {result.returncode} (0 or 2 expected)")
        if "Traceback" in output:
            at = output.index("Traceback")
            problems.append("a traceback in the output:\n" + output[at:at + 1500])
        if result.returncode == 2:
            prefix = f"{module}: error: "
            lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
            if len(lines) != 1 or not lines[0][len(prefix):].strip():
                problems.append(f"exit 2 without exactly one line '{prefix}<message>' on "
                                f"stderr: {result.stderr[-1500:]!r}")
    for folder, entries in before.items():
        changed = changes(entries, snapshot(folder))
        if changed:
            problems.append(f"input {folder} changed:\n    " + "\n    ".join(changed[:10]))
    if problems:
        ended = "no exit" if result is None else f"exit {result.returncode}"
        last = result.stderr.strip().splitlines()[-1:] if result is not None else []
        pytest.fail(f"{command}\n  {ended} {last}\n  " + "\n  ".join(problems), pytrace=False)


# ----------------------------------------------------------------------------------------------
# Inputs shared by the cases
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The tiny untrained residual model (the identity), patch 16x32x32."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def views(tmp_path_factory) -> Path:
    """A folder with one 16x32x32 study-1 nucleus pair (``image_0_nucleus_angle.tif`` and its
    ``_fused``)."""
    from fmc.simulation.synth import write_pair

    folder = tmp_path_factory.mktemp("views")
    write_pair(folder, 1, "nucleus", 0, shape=SMALL, scale=6.0)
    return folder


@pytest.fixture(scope="module")
def view(views) -> Path:
    return views / "image_0_nucleus_angle.tif"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, ckpt) -> Path:
    """A models.yaml registry holding the tiny checkpoint for study 1 nucleus."""
    folder = tmp_path_factory.mktemp("registry")
    shutil.copy(ckpt, folder / "tiny.ckpt")
    (folder / "models.yaml").write_text("models:\n  - {study: 1, content: nucleus, ckpt: tiny.ckpt}\n")
    return folder


@pytest.fixture(scope="module")
def challenge_inputs(tmp_path_factory, view) -> Path:
    folder = tmp_path_factory.mktemp("challenge_in")
    shutil.copy(view, folder / "case_0.tif")
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep folder with one run whose metrics.json is broken (fmc.report lists it)."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "0" / "checkpoints").mkdir(parents=True)
    (folder / "0" / "metrics.json").write_text("{not json")
    return folder


# The fast part (``-m "not slow"``) runs the cases the brief of each part names; the variants
# of them, the cases that start a subprocess and torch.compile are marked slow (``make
# test-full``).
def cases(values: list[list[str]], slow: tuple[str, ...] = ()) -> list:
    """Parameters named by their overrides; those named in ``slow`` marked slow."""
    assert set(slow) <= {" ".join(value) for value in values}, slow
    return [pytest.param(value, id=" ".join(value),
                         marks=[pytest.mark.slow] if " ".join(value) in slow else [])
            for value in values]


def kinds(names, slow: tuple[str, ...] = ()) -> list:
    """Parameters named by their kind; those named in ``slow`` marked slow."""
    assert set(slow) <= {name for name in names if isinstance(name, str)}, slow
    return [name if not isinstance(name, str) or name not in slow
            else pytest.param(name, marks=pytest.mark.slow) for name in names]


def predict_args(ckpt: Path, input_: Path, tmp_path: Path) -> list[str]:
    return [f"ckpt={ckpt}", f"input={input_}", f"output={tmp_path / 'out'}", "progress=false"]


# ----------------------------------------------------------------------------------------------
# A. Config values Hydra accepts but a command may not be able to use
# ----------------------------------------------------------------------------------------------
PREDICT_VALUES = [
    ["overlap=2"], ["overlap=-0.1"], ["overlap=abc"], ["batch_size=0"], ["batch_size=abc"],
    ["batch_size=1.5"], ["patch=[0,0,0]"], ["patch=[16,32]"], ["patch=abc"],
    ["patch=[16,32,-32]"], ["tta=[w]"], ["tta=x"], ["amp=xx"], ["device=tpu"], ["device=cuda:99"],
    ["output_dtype=int8"], ["weighting=foo"], ["weighting=roof", "roof_crop=[1]"],
    ["weighting=roof", "roof_crop=[100,100,100]"], ["buffer_threshold_gb=-1"],
    ["output_format=png"], ["fallback=maybe"], ["compile=maybe"], ["tiff_tiles=maybe"],
    ["ckpt=[]"], ["ckpt=123"], ["ckpt=auto"], ["registry=123", "ckpt=auto"],
]

PREDICT_SLOW = ("overlap=abc", "batch_size=1.5", "patch=[16,32,-32]", "tta=x", "device=cuda:99",
                "weighting=roof roof_crop=[100,100,100]", "fallback=maybe",
                "compile=maybe",  # torch.compile of the tiny network: 5-15 s here
                "tiff_tiles=maybe", "ckpt=auto", "registry=123 ckpt=auto")


@pytest.mark.parametrize("values", cases(PREDICT_VALUES, PREDICT_SLOW))
def test_predict_config_values(values, ckpt, view, tmp_path: Path):
    corpus_run("fmc.predict", *predict_args(ckpt, view, tmp_path), *values,
               inputs=[view.parent, ckpt.parent], cwd=tmp_path)


CHALLENGE_VALUES = [["on_error=maybe"], ["on_error=123"], ["overlap=2"], ["batch_size=0"],
                    ["patch=abc"], ["tta=[w]"], ["output_dtype=int8"], ["device=tpu"]]


@pytest.mark.parametrize("values", cases(CHALLENGE_VALUES, ("on_error=123", "output_dtype=int8",
                                                           "device=tpu")))
def test_challenge_config_values(values, challenge_inputs, registry, tmp_path: Path):
    corpus_run("fmc.challenge", f"input={challenge_inputs}", f"output={tmp_path / 'out'}",
               f"registry={registry}", *values, inputs=[challenge_inputs, registry], cwd=tmp_path)


TRAIN_VALUES = [
    ["data.batch_size=0"], ["data.patch_size=[1]"], ["data.patch_size=[0,0,0]"],
    ["model.features=0"], ["model.depth=0"], ["model.depth=-1"], ["trainer.max_epochs=-5"],
    ["seed=abc"], ["data.num_workers=-1"], ["data.epoch_steps=0"], ["trainer.precision=bad"],
    ["trainer.accelerator=tpu"], ["trainer.devices=0"], ["trainer.max_steps=abc"],
    ["model.lr=abc"], ["study=0"], ["content=x"], ["holdout=9"], ["test_volumes=maybe"],
    ["data.foreground_share=2"], ["data.flip_axes=[Q]"],
]

TRAIN_SLOW = ("data.patch_size=[0,0,0]", "holdout=9", "test_volumes=maybe",
              "data.foreground_share=2", "data.flip_axes=[Q]")


@pytest.mark.parametrize("values", cases(TRAIN_VALUES, TRAIN_SLOW))
def test_train_config_values(values, h5_root, tmp_path: Path):
    corpus_run("fmc.train", *TINY_RUN, f"data.root={h5_root}", "test_volumes=false", *values,
               inputs=[h5_root], run_dir=tmp_path / "run")


# sigma is read by the Gaussian baseline only.
EVALUATE_VALUES = [["baseline=gaussian", "sigma=-1"], ["baseline=gaussian", "sigma=abc"],
                   ["baseline=gaussian", "sigma=[1,2]"], ["slab=0"], ["block_y=0"], ["table=xyz"],
                   ["iou=maybe"], ["iou_max_voxels=-1"], ["baseline=foo"],
                   ["baseline=gaussian", "sigma=sweep", "sigma_sweep=[]"]]


@pytest.mark.parametrize("values", cases(EVALUATE_VALUES, (
    "baseline=gaussian sigma=abc", "baseline=gaussian sigma=[1,2]", "baseline=foo",
    "baseline=gaussian sigma=sweep sigma_sweep=[]")))
def test_evaluate_config_values(values, raw_folder, tmp_path: Path):
    pred = fused_as_predictions(raw_folder, tmp_path / "pred")
    corpus_run("fmc.evaluate", f"input={raw_folder}", f"prediction={pred}", f"output={tmp_path / 'scores'}",
               "progress=false", *values, inputs=[raw_folder, pred], cwd=tmp_path)


PREPARE_VALUES = [["workers=0"], ["workers=-1"], ["workers=abc"], ["split.train=-1"],
                  ["split.train=abc"], ["split.seed=abc"], ["max_foreground=-1"],
                  ["compression=foo"], ["working_spacing_um=0"], ["overwrite=maybe"]]


@pytest.mark.parametrize("values", cases(PREPARE_VALUES, ("workers=abc", "split.seed=abc",
                                                         "overwrite=maybe")))
def test_prepare_config_values(values, views, tmp_path: Path):
    corpus_run("fmc.prepare", f"input={views}", f"output={tmp_path / 'h5'}", "progress=false",
               *values, inputs=[views], cwd=tmp_path)


SYNTH_VALUES = [["shape=[0,0,0]"], ["shape=[16,32]"], ["shape=abc"], ["shape=[-16,32,32]"],
                ["target=foo"], ["field_of_view=foo"], ["optics.photons=-1"],
                ["optics.no_such_key=1"], ["fusion.blend_width=abc"], ["scale=-1"], ["png=maybe"]]

# Keys conf/synth.yaml does not hold: refused by the real command line (a subprocess, seconds).
SYNTH_SLOW = ("optics.no_such_key=1", "fusion.blend_width=abc", "shape=[-16,32,32]",
              "png=maybe")


@pytest.mark.parametrize("values", cases(SYNTH_VALUES, SYNTH_SLOW))
def test_synth_config_values(values, tmp_path: Path):
    corpus_run("fmc.synth", f"output={tmp_path / 'o'}", "shape=[16,32,32]", "scale=6", *values,
               inputs=[], cwd=tmp_path)


REPORT_VALUES = [["runs=abc"], ["runs=[[1]]"], ["montage_max_images=-1"], ["montage_panel_px=0"],
                 ["evaluate_missing=maybe"], ["predict_overrides=abc"], ["montage_images=abc"]]


@pytest.mark.parametrize("values", cases(REPORT_VALUES, ("runs=[[1]]", "montage_images=abc")))
def test_report_config_values(values, sweep, tmp_path: Path):
    corpus_run("fmc.report", f"sweep={sweep}", f"output={tmp_path / 'report'}", *values,
               inputs=[sweep], cwd=tmp_path)


EXPORT_VALUES = [["format=xyz"], ["patch=[1,2]"], ["patch=abc"], ["patch=[0,0,0]"],
                 ["patch=[-16,32,32]"], ["patch=[1,1,1]"], ["format=onnx"]]


@pytest.mark.parametrize("values", cases(EXPORT_VALUES, ("patch=[-16,32,32]", "patch=[1,1,1]",
                                                      "format=onnx")))
def test_export_config_values(values, ckpt, tmp_path: Path):
    corpus_run("fmc.export", f"ckpt={ckpt}", f"output={tmp_path / 'model.pt'}", *values,
               inputs=[ckpt.parent], cwd=tmp_path)


def _napari_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("napari") is not None


# Without napari no window can open; with it, a case that gets as far as showing would open one.
@pytest.mark.skipif(_napari_installed(), reason="napari is installed: a case could open a window")
@pytest.mark.parametrize("values", [["ndisplay=5"], ["target=abc"], ["prediction=abc"], []],
                         ids=lambda values: " ".join(values) or "valid view, no napari")
def test_view_config_values(values, view, tmp_path: Path):
    corpus_run("fmc.view", f"view={view}", *values, inputs=[view.parent], cwd=tmp_path)


# ----------------------------------------------------------------------------------------------
# B. Malformed files
# ----------------------------------------------------------------------------------------------
def png_bytes() -> bytes:
    """An 8x8 grey PNG."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + bytes(range(8)) for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def random_bytes(size: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


GARBAGE_CSV = ("\x00\xff;;;\nnot,a,split,list\n;\n;;;;\nimage_0_nucleus_angle.h5\n"
               "../../../etc/passwd;/dev/zero\n" + "x" * 5000 + "\n")


def make_bad_file(kind: str, path: Path) -> Path:
    """One malformed file of ``kind`` at ``path`` (its suffix is the caller's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "png":
        path.write_bytes(png_bytes())
    elif kind == "random_bytes":
        path.write_bytes(random_bytes())
    elif kind == "folder":
        path.mkdir()
        (path / "inside.txt").write_text("a folder named like a volume\n")
    elif kind == "symlink_loop":
        os.symlink(path.name, path)
    elif kind == "unreadable":
        shutil.copy(Path(__file__), path)
        path.chmod(0)
    elif kind == "h5_zero_bytes":
        path.write_bytes(b"")
    elif kind == "h5_no_datasets":
        with h5py.File(path, "w"):
            pass
    elif kind == "garbage_csv":
        path.write_text(GARBAGE_CSV)
    else:
        raise ValueError(kind)
    return path


TIFF_KINDS = ["zero_bytes", "png", "random_bytes", "folder", "symlink_loop",
              pytest.param("unreadable", marks=pytest.mark.skipif(
                  ROOT, reason="root reads a file whatever its mode"))]
H5_KINDS = ["h5_zero_bytes", "h5_no_datasets"]
ALL_KINDS = [*TIFF_KINDS, *H5_KINDS, "garbage_csv"]


def bad_name(kind: str, stem: str = "image_9_nucleus_angle") -> str:
    return stem + (".h5" if kind.startswith("h5") else ".csv" if kind.endswith("csv") else ".tif")


@pytest.fixture
def restore_modes():
    """Give a chmod-000 file its mode back at the end, so that pytest can remove it."""
    made: list[Path] = []
    yield made
    for path in made:
        if path.exists() and not path.is_symlink():
            path.chmod(0o600)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_predict_malformed_files(kind, ckpt, view, tmp_path: Path, restore_modes):
    """A folder with a good view and the bad file (the .h5 and the .csv given directly: a folder
    of TIFFs is read for its TIFFs)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(view, folder / view.name)
    bad = make_bad_file(kind, folder / bad_name(kind))
    restore_modes.append(bad)
    target = bad if kind in (*H5_KINDS, "garbage_csv") else folder
    corpus_run("fmc.predict", *predict_args(ckpt, target, tmp_path), inputs=[folder, ckpt.parent],
               cwd=tmp_path)


@pytest.mark.parametrize("role", ["raw", pytest.param("pred", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", kinds(ALL_KINDS, H5_KINDS))
def test_evaluate_malformed_files(kind, role, raw_folder, tmp_path: Path, restore_modes):
    """``raw``: the bad file is a view (beside a good fused file of its name) in the raw folder;
    ``pred``: it is a prediction. The .csv is given as split_list=."""
    pred = fused_as_predictions(raw_folder, tmp_path / "pred")
    args = [f"input={raw_folder}", f"prediction={pred}", f"output={tmp_path / 'scores'}", "progress=false"]
    if kind == "garbage_csv":
        if role == "pred":
            pytest.skip("a split list has no prediction role")
        bad = make_bad_file(kind, tmp_path / "lists" / "garbage.csv")
        args.append(f"split_list={bad}")
        inputs = [raw_folder, pred, bad.parent]
    elif role == "raw":
        bad = make_bad_file(kind, raw_folder / bad_name(kind))
        shutil.copy(raw_folder / "image_0_nucleus_fused.tif", raw_folder / "image_9_nucleus_fused.tif")
        inputs = [raw_folder, pred]
    else:
        name = bad_name(kind, "image_0_nucleus_angle")
        (pred / name).unlink(missing_ok=True)
        bad = make_bad_file(kind, pred / name)
        inputs = [raw_folder, pred]
    restore_modes.append(bad)
    corpus_run("fmc.evaluate", *args, inputs=inputs, cwd=tmp_path)


@pytest.mark.parametrize("kind", kinds(ALL_KINDS, (*H5_KINDS, "garbage_csv")))
def test_prepare_malformed_files(kind, views, tmp_path: Path, restore_modes):
    """An input folder with a good pair and the bad file."""
    folder = tmp_path / "raw"
    shutil.copytree(views, folder)
    bad = make_bad_file(kind, folder / bad_name(kind))
    restore_modes.append(bad)
    corpus_run("fmc.prepare", f"input={folder}", f"output={tmp_path / 'h5'}", "progress=false",
               inputs=[folder], cwd=tmp_path)


def _edited_checkpoint(source: Path, path: Path, edit: Callable[[dict], None]) -> Path:
    stored = torch.load(source, map_location="cpu", weights_only=True)
    edit(stored)
    torch.save(stored, path)
    return path


def _set_hparam(key, value):
    return lambda stored: stored["hyper_parameters"].__setitem__(key, value)


def _zip_of_random_bytes(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny/data.pkl", random_bytes(2048))
        archive.writestr("tiny/version", "3\n")
        archive.writestr("tiny/data/0", random_bytes(512, seed=1))
    return path


BAD_CHECKPOINTS: dict[str, Callable[[Path, Path], Path]] = {
    "zero_bytes": lambda ckpt, path: make_bad_file("zero_bytes", path),
    "random_bytes": lambda ckpt, path: make_bad_file("random_bytes", path),
    "zip_of_random_bytes": lambda ckpt, path: _zip_of_random_bytes(path),
    "folder": lambda ckpt, path: make_bad_file("folder", path),
    "symlink_loop": lambda ckpt, path: make_bad_file("symlink_loop", path),
    "hparams_features_abc": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, _set_hparam("features", "abc")),
    "hparams_patch_size_x": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, _set_hparam("patch_size", "x")),
    "hparams_channels_5": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, _set_hparam("channels", 5)),
    "hparams_depth_-1": lambda ckpt, path: _edited_checkpoint(ckpt, path, _set_hparam("depth", -1)),
    "hparams_spacing_zero": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, _set_hparam("spacing_zyx", [0, 0, 0])),
    "hparams_study_abc": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, _set_hparam("study", "abc")),
    "hparams_a_list": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, lambda stored: stored.__setitem__("hyper_parameters", [1, 2])),
    "state_dict_a_string": lambda ckpt, path: _edited_checkpoint(
        ckpt, path, lambda stored: stored.__setitem__("state_dict", "weights")),
    "a_list": lambda ckpt, path: torch.save([1, 2, 3], path) or path,
}


@pytest.mark.parametrize("kind", kinds(BAD_CHECKPOINTS, (
    "symlink_loop", "hparams_depth_-1", "hparams_spacing_zero", "hparams_study_abc",
    "hparams_a_list", "state_dict_a_string", "a_list")))
def test_predict_malformed_checkpoints(kind, ckpt, view, tmp_path: Path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    bad = BAD_CHECKPOINTS[kind](ckpt, folder / "model.ckpt")
    corpus_run("fmc.predict", *predict_args(bad, view, tmp_path),
               inputs=[folder, view.parent, ckpt.parent], cwd=tmp_path)


# ----------------------------------------------------------------------------------------------
# C. Model registries and packages (ckpt=auto registry=...)
# ----------------------------------------------------------------------------------------------
def _registry_with(manifest: str) -> Callable[[Path, Path], Path]:
    def make(ckpt: Path, folder: Path) -> Path:
        folder.mkdir(parents=True)
        shutil.copy(ckpt, folder / "tiny.ckpt")
        (folder / "subfolder").mkdir()
        (folder / "models.yaml").write_text(manifest)
        return folder
    return make


def _not_a_zip(ckpt: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "models.zip"
    path.write_text("not a zip\n")
    return path


def _empty_zip(ckpt: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "models.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    return path


def _zip_of_bad_manifest(ckpt: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "models.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("models.yaml", "models:\n  - {study: 1, content: nucleus, ckpt: 5}\n")
    return path


ENTRY = "{study: 1, content: nucleus, ckpt: tiny.ckpt}"
BAD_REGISTRIES: dict[str, Callable[[Path, Path], Path]] = {
    "models_yaml_a_list": _registry_with(f"- {ENTRY}\n"),
    "models_yaml_invalid": _registry_with("models: [ {study: 1, content: nucleus\n  ckpt: :\n"),
    "models_yaml_python_tag": _registry_with(
        "models:\n  - !!python/object/apply:os.system ['true']\n"),
    "models_yaml_empty": _registry_with(""),
    "models_null": _registry_with("models: null\n"),
    "models_a_string": _registry_with("models: tiny.ckpt\n"),
    "entry_a_string": _registry_with("models:\n  - tiny.ckpt\n"),
    "entry_without_ckpt": _registry_with("models:\n  - {study: 1, content: nucleus}\n"),
    "entry_ckpt_5": _registry_with("models:\n  - {study: 1, content: nucleus, ckpt: 5}\n"),
    "entry_ckpt_a_folder": _registry_with(
        "models:\n  - {study: 1, content: nucleus, ckpt: subfolder}\n"),
    "entry_ckpt_missing": _registry_with(
        "models:\n  - {study: 1, content: nucleus, ckpt: missing.ckpt}\n"),
    "entry_study_abc": _registry_with("models:\n  - {study: abc, content: 7, ckpt: tiny.ckpt}\n"),
    "entry_sha256_wrong": _registry_with(
        "models:\n  - {study: 1, content: nucleus, ckpt: tiny.ckpt, sha256: 1234}\n"),
    "zip_not_a_zip": _not_a_zip,
    "zip_empty": _empty_zip,
    "zip_ckpt_5": _zip_of_bad_manifest,
}


@pytest.mark.parametrize("kind", kinds(BAD_REGISTRIES, (
    "models_yaml_empty", "models_null", "models_a_string", "entry_a_string", "entry_ckpt_missing",
    "entry_study_abc", "entry_sha256_wrong", "zip_ckpt_5")))
def test_predict_malformed_registries(kind, ckpt, view, tmp_path: Path):
    folder = tmp_path / "registry"
    registry_ = BAD_REGISTRIES[kind](ckpt, folder)
    corpus_run("fmc.predict", "ckpt=auto", f"registry={registry_}", f"input={view}",
               f"output={tmp_path / 'out'}", "progress=false",
               inputs=[folder, view.parent], cwd=tmp_path, env={"FMC_CACHE": str(tmp_path / "cache")})


# ----------------------------------------------------------------------------------------------
# D. OME-Zarr stores
# ----------------------------------------------------------------------------------------------
def _axes(names="zyx", unit="micrometer") -> list[dict]:
    return [{"name": name, "type": "space", "unit": unit} for name in names]


def _multiscales(scale=(6.0, 1.17, 1.17), names="zyx", unit="micrometer", path="0") -> list:
    dataset = {"path": path, "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}
    return [{"version": "0.4", "axes": _axes(names, unit), "datasets": [dataset]}]


def _no_path() -> list:
    image = _multiscales()
    del image[0]["datasets"][0]["path"]
    return image


def _data(dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, SMALL).astype(dtype)


ZARRS: dict[str, tuple[Callable[[], np.ndarray], Callable[[], object]]] = {
    "bool_dtype": (lambda: _data() > 500, _multiscales),
    "string_dtype": (lambda: _data().astype(str), _multiscales),
    "complex_dtype": (lambda: _data(np.complex64), _multiscales),
    "scale_zero": (_data, lambda: _multiscales(scale=(0, 1.17, 1.17))),
    "scale_nan": (_data, lambda: _multiscales(scale=(float("nan"), 1.17, 1.17))),
    "scale_negative": (_data, lambda: _multiscales(scale=(-6, 1.17, 1.17))),
    "scale_too_short": (_data, lambda: _multiscales(scale=(1.17,))),
    "scale_strings": (_data, lambda: _multiscales(scale=("a", "b", "c"))),
    "multiscales_not_a_list": (_data, lambda: {"datasets": [{"path": "0"}]}),
    "multiscales_empty_list": (_data, lambda: []),
    "datasets_empty": (_data, lambda: [{"version": "0.4", "axes": _axes(), "datasets": []}]),
    "dataset_without_path": (_data, _no_path),
    "dataset_path_missing_array": (_data, lambda: _multiscales(path="9")),
    "dataset_path_escapes": (_data, lambda: _multiscales(path="../../x")),
    "axes_x_y_z": (_data, lambda: _multiscales(names="xyz")),
    "axes_repeated": (_data, lambda: _multiscales(names="zzz")),
    "unit_parsec": (_data, lambda: _multiscales(unit="parsec")),
    "unit_a_number": (_data, lambda: _multiscales(unit=5)),
}


def write_zarr(path: Path, data: np.ndarray, multiscales) -> Path:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data)
    group.attrs["multiscales"] = multiscales
    return path


@pytest.mark.parametrize("kind", kinds(ZARRS, (
    "complex_dtype", "scale_strings", "multiscales_empty_list", "dataset_path_missing_array",
    "dataset_path_escapes", "axes_repeated", "unit_a_number")))
def test_predict_malformed_ome_zarr(kind, ckpt, tmp_path: Path):
    pytest.importorskip("zarr")
    data, multiscales = ZARRS[kind]
    store = write_zarr(tmp_path / "in" / "v.ome.zarr", data(), multiscales())
    corpus_run("fmc.predict", *predict_args(ckpt, store, tmp_path),
               inputs=[store.parent, ckpt.parent], cwd=tmp_path)
