"""Where fmc finds its configs and keeps its data: one home for every fixed folder.

The configs are the repository's top-level ``conf/`` in a checkout (and an editable install); a
wheel (``pip install .``) carries the same files as ``fmc/conf`` (pyproject.toml). The embedded
synthetic dataset and downloaded model packages live in a user cache, never under the folder
the user happens to stand in:

- ``FMC_CACHE``: fmc's cache (model packages), default ``$XDG_CACHE_HOME/fmc`` or
  ``~/.cache/fmc``;
- ``FMC_DATA``: the embedded dataset's folder (``synthetic/`` TIFF pairs, ``synthetic_h5/``
  prepared), default ``<FMC_CACHE>/data``.

Every function reads the environment when called, so a test (or a user) can move a folder
without re-importing fmc.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DATA_ENV = "FMC_DATA"
CACHE_ENV = "FMC_CACHE"
# fmc/ (the package folder): its parent is the checkout in a source tree, site-packages when
# installed from the wheel.
_PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """fmc's config folder: the checkout's ``conf/``, else the copy installed in ``fmc/conf``.

    A checkout is recognised by its ``pyproject.toml`` beside ``conf/train.yaml``, so that an
    unrelated ``conf`` folder next to an installed package (site-packages) is never taken.
    """
    checkout = _PACKAGE.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return checkout / "conf"
    return _PACKAGE / "conf"


def cache_dir() -> Path:
    """fmc's user cache: ``$FMC_CACHE``, else ``$XDG_CACHE_HOME/fmc``, else ``~/.cache/fmc``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().absolute() / "fmc"


def data_dir() -> Path:
    """The embedded dataset's folder: ``$FMC_DATA``, else ``<cache_dir()>/data`` (absolute).

    Absolute because a command may run in another folder than the one the path was given in
    (Hydra run folders, subprocesses), and its log line should say exactly where the data are.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().absolute()
    return cache_dir() / "data"


def embedded_tiff_dir() -> Path:
    """The embedded dataset's TIFF pairs (``fmc.synth``'s layout): ``<data_dir()>/synthetic``."""
    return data_dir() / "synthetic"


def embedded_h5_dir() -> Path:
    """The embedded dataset prepared (H5 files, split lists): ``<data_dir()>/synthetic_h5``."""
    return data_dir() / "synthetic_h5"


# Where fmc.train's Hydra folders go, relative to the folder a command runs in
# (conf/hydra/default.yaml): runs in outputs/train/<date>_<time>, sweeps in
# outputs/train/multirun/<date>_<time>.
TRAINING_OUTPUTS = Path("outputs") / "train"
LATEST = "last"


def resolve_latest(value: str | Path, key: str) -> Path:
    """``value`` as a path; ``last`` is the newest run or sweep folder of ``fmc.train`` under
    ``./outputs/train`` (what ``python -m fmc.report sweep=last`` and ``fmc.predict ckpt=auto
    registry=last`` mean).

    Raises
    ------
    FmcInputError
        ``last`` with no ``fmc.train`` folder under ``./outputs/train``.
    """
    if str(value) != LATEST:
        return Path(str(value))  # an int from the command line (registry=123) is a name too
    stamped = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")
    folders = [p for base in (TRAINING_OUTPUTS, TRAINING_OUTPUTS / "multirun") if base.is_dir()
               for p in base.iterdir() if p.is_dir() and stamped.match(p.name)]
    if not folders:
        from fmc.core.errors import FmcInputError

        raise FmcInputError(f"{key}={LATEST}: no fmc.train run or sweep under "
                            f"{(Path.cwd() / TRAINING_OUTPUTS)} (run fmc.train from this folder "
                            "first, or give the folder)")
    return max(folders, key=lambda p: (p.name, p.parent.name == "multirun"))
