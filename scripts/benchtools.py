"""Helpers shared by the scripts in scripts/: the machine line, running and measuring commands,
test volumes, tiny checkpoints, fmc.train's composed config, JSON-lines rows, Markdown tables.

A script imports it after putting its own folder on ``sys.path`` (tests load scripts by path)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchtools import machine, phantom  # noqa: E402

Importing it puts the repository root on ``sys.path`` too, so ``fmc`` is the checkout's.

Test volumes: realistic simulated pairs come from the library (:mod:`fmc.simulation.synth`,
``generate_pair`` / ``write_pair`` / ``python -m fmc.synth``); their cost grows with the volume
(about 40 s and 5 GB for a study-1-sized pair, docs/benchmarks.md), too much for a study-5-sized
one. :func:`phantom` is the one cheap generator of any size, for the benchmarks whose measure
depends on the data only through its size and rough structure (reading, tiling, writing, chunked
metrics); :func:`degraded` makes a view-like copy of one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BLOCK = 16  # planes made at a time by the volume generators: no volume-sized float temporaries


# -- the machine, arguments ------------------------------------------------------------------------
def machine() -> str:
    """One line: architecture, cores, RAM, Python."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def zyx_argument(parser: argparse.ArgumentParser, flag: str, default: Sequence[int],
                 help: str | None = None) -> None:
    """A ``--flag Z Y X`` option: three integers (a volume's or a patch's shape)."""
    parser.add_argument(flag, type=int, nargs=3, default=list(default), metavar=("Z", "Y", "X"),
                        help=help)


def dims(shape: Iterable[int]) -> str:
    """``222×731×860``: a shape as the tables print it."""
    return "×".join(map(str, shape))


# -- commands --------------------------------------------------------------------------------------
def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and output (stdout + stderr) of one child process.

    ``os.wait4`` gives the rusage of that child (and of its own reaped children, as a maximum).
    Linux carries the high-water mark across fork and exec, so the figure includes the caller's
    RSS at fork time: callers keep no volume in memory while they run the measured command.
    Exits with the command's output if it fails.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        output.seek(0)
        text = output.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(text)
    return seconds, usage.ru_maxrss / 1024**2, text


def run_logged(command: list[str], log: Path | None = None) -> float:
    """Run a command from the repository root, its output into ``log`` (None: this terminal);
    wall seconds.

    Exits naming the command (and with the log's tail) if it fails.
    """
    start = time.perf_counter()
    if log is None:
        result = subprocess.run(command, cwd=REPO)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            handle.write("$ " + shlex.join(command) + "\n")
            handle.flush()
            result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}\n"
                         + (log.read_text()[-3000:] if log is not None else ""))
    return seconds


def run_module(*args: str, log: Path | None = None) -> float:
    """``python -m <args>`` (an fmc command: ``run_module("fmc.train", "study=1")``) by
    :func:`run_logged`; wall seconds."""
    return run_logged([sys.executable, "-m", *args], log)


def max_time(seconds: float) -> str:
    """``trainer.max_time`` of a budget in seconds (DD:HH:MM:SS)."""
    seconds = int(round(seconds))
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- test volumes ----------------------------------------------------------------------------------
def phantom(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A cheap uint16 volume of any size: a bright ellipsoidal specimen of textured blobs (about
    1600) on a dim noisy background (100-130), the same for the same seed.

    Made :data:`BLOCK` planes at a time, so that a study-5-sized volume (309×1920×1920) needs
    no volume-sized float temporaries.
    """
    from scipy import ndimage

    shape = tuple(int(n) for n in shape)
    rng = np.random.default_rng(seed)
    volume = np.empty(shape, np.uint16)
    def squared(axis: int, semi: float) -> np.ndarray:  # (distance from the centre / semi-axis)²
        return ((np.arange(shape[axis]) / shape[axis] - 0.5) / semi) ** 2

    # The ellipsoid's semi-axes: 0.4, 0.35 and 0.3 of the volume along Z, Y and X.
    z = squared(0, 0.4)[:, None, None]
    yx = (squared(1, 0.35)[:, None] + squared(2, 0.3)[None, :]).astype(np.float32)
    for z0 in range(0, shape[0], BLOCK):
        z1 = min(z0 + BLOCK, shape[0])
        inside = yx < 1 - z[z0:z1]
        texture = ndimage.uniform_filter(rng.random((z1 - z0, *shape[1:]), dtype=np.float32), 5)
        volume[z0:z1] = (100 + 30 * rng.random((z1 - z0, *shape[1:]), dtype=np.float32)
                         + inside * texture * 3000).astype(np.uint16)
    return volume


def study_meta(study: int, content: str = "nucleus"):
    """The metadata a volume of ``study`` is written with: its spacing from
    :data:`fmc.core.studies.STUDIES`."""
    from fmc.core.studies import STUDIES
    from fmc.io.metadata import VolumeMeta

    return VolumeMeta(study=study, content=content, spacing_zyx=STUDIES[study].spacing_zyx)


def degraded(volume: np.ndarray, seed: int, gain: float = 0.8, noise: float = 30.0) -> np.ndarray:
    """A dimmer, noisier uint16 copy of ``volume`` (``gain`` × volume + Gaussian noise of std
    ``noise``): a single view of a fused :func:`phantom`, made :data:`BLOCK` planes at a time."""
    rng = np.random.default_rng(seed)
    view = np.empty(volume.shape, np.uint16)
    for z0 in range(0, volume.shape[0], BLOCK):
        block = volume[z0:z0 + BLOCK]
        values = block * np.float32(gain) + rng.normal(0, noise, block.shape).astype(np.float32)
        view[z0:z0 + BLOCK] = np.clip(values, 0, 65535).astype(np.uint16)
    return view


# -- models and configs ----------------------------------------------------------------------------
def save_module(module, path: Path) -> Path:
    """Save a Lightning module as a checkpoint ``fmc.predict`` loads (no training)."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (timings on a GPU end here); nothing on the CPU."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def train_config(overrides: Sequence[str]):
    """The config ``python -m fmc.train <overrides>`` composes (Hydra's global state cleared)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fmc.core.cli import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


# -- rows and tables -------------------------------------------------------------------------------
def append_jsonl(path: Path, row: dict) -> None:
    """Append one row to a JSON-lines file (kept as soon as it is measured)."""
    with Path(path).open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (none when it does not exist)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []


def table_row(*cells: object) -> str:
    """One Markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table_header(*titles: str) -> str:
    """A Markdown table's first two lines: the titles and the ``|---|`` rule."""
    return table_row(*titles) + "\n|" + "---|" * len(titles)


def markdown_table(titles: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A whole Markdown table: :func:`table_header` and one :func:`table_row` per row."""
    return "\n".join([table_header(*titles), *(table_row(*row) for row in rows)])


def write_marked_block(path: Path, start: str, end: str, body: str, heading: str = "") -> None:
    """Put ``body`` between the markers ``start`` and ``end`` of a Markdown file, replacing what
    was there; where the markers are missing, append them (after ``heading``, if given)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    elif text.strip():
        text = text.rstrip() + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    else:
        text = block + "\n"
    path.write_text(text)
