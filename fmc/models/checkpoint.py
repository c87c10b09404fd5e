"""Reading checkpoints as data, never as code, and saying clearly why one is refused.

A checkpoint is a pickle: loaded without restriction it can run any code it names. fmc loads
every checkpoint with ``torch.load(..., weights_only=True)`` (tensors and plain containers
only), passed explicitly so that ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off, and
never instantiates anything a checkpoint names: its hyper-parameters are keyword arguments of
:class:`fmc.models.module.FusionModule`, not Hydra ``_target_`` configs.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import METRICS_FILE

# The keys a Lightning checkpoint written by fmc.train holds besides the weights.
REQUIRED_KEYS = ("state_dict", "hyper_parameters")
RESUME_KEYS = ("optimizer_states", "loops")
# Hyper-parameters that decide the network's shape (named in mismatch messages).
NETWORK_KEYS = ("network", "channels", "out_channels", "features", "depth", "norm", "residual",
                "out_activation", "confidence")


def describe_load_error(error: BaseException) -> str:
    """Why a checkpoint failed to load, in words (without torch's advice to drop weights_only)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (f"refused: it holds pickled Python objects (it names {found.group(1)}), not "
                    "only tensors and plain data; loading them could run code, and fmc loads "
                    "checkpoints as data only")
        if "Unsupported operand" not in text:
            return ("refused: it holds objects other than tensors and plain data, and fmc loads "
                    "checkpoints as data only")
    if isinstance(error, pickle.UnpicklingError) or "zip archive" in text or \
            isinstance(error, EOFError):
        return ("not an fmc checkpoint: not a file torch.save wrote, or a truncated one "
                f"({type(error).__name__})")
    if "Error(s) in loading state_dict" in text:
        details = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        detail = f": {details[0][:200]}" if details else ""
        return f"its weights do not fit the network its hyper-parameters describe{detail}"
    first = text.splitlines()[0][:200] if text else ""
    return f"not an fmc checkpoint ({type(error).__name__}: {first})"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``fmc.train``, loaded as data (``weights_only=True``) on the CPU.

    Raises
    ------
    FmcInputError
        If the file is missing, holds pickled code, is not a PyTorch file, or is not a Lightning
        checkpoint with weights and hyper-parameters (e.g. a bare ``state_dict``).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FmcInputError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure is "cannot use this file"
        raise FmcInputError(f"{path}: {describe_load_error(error)}") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise FmcInputError(f"{path}: not an fmc checkpoint ({_holds(checkpoint)}; fmc.train's "
                            f"checkpoints hold {' and '.join(REQUIRED_KEYS)})")
    if not isinstance(checkpoint["hyper_parameters"], dict):
        raise FmcInputError(f"{path}: not an fmc checkpoint (its hyper_parameters are not a "
                            "mapping)")
    weights = checkpoint["state_dict"] if isinstance(checkpoint["state_dict"], dict) else {}
    bad = non_finite_tensors(weights)
    if bad:
        raise FmcInputError(f"{path}: {len(bad)} of its {len(weights)} weight tensors hold NaN or "
                            f"infinite values (first: {bad[0]}): the training that wrote it "
                            "diverged; use an earlier checkpoint of that run")
    return checkpoint


def non_finite_tensors(state_dict: dict) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity."""
    import torch

    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]


def set_hyperparameter(path: str | Path, key: str, value: Any) -> None:
    """Set one hyperparameter of a checkpoint file in place (rewritten atomically)."""
    import torch

    from fmc.core.files import atomic_path

    checkpoint = read_checkpoint(path)
    checkpoint["hyper_parameters"][key] = value
    with atomic_path(path) as part:
        torch.save(checkpoint, part)


def check_resumable(path: str | Path, checkpoint: dict[str, Any], module) -> None:
    """Raise unless ``checkpoint`` can resume training of ``module`` (same network, full state).

    Raises
    ------
    FmcInputError
        If the checkpoint holds weights only, or its network differs from ``module``'s (the
        message names the first differing tensor and the differing hyper-parameters).
    """
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise FmcInputError(f"ckpt={path}: holds no training state ({', '.join(missing)} "
                            "missing), so training cannot resume from it; start a new run instead")
    stored = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()
              if hasattr(value, "shape")}
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    if stored == expected:
        return
    first = next(iter(sorted(set(stored) ^ set(expected))), None)
    if first is not None:
        where = "only in the checkpoint" if first in stored else "missing from the checkpoint"
        tensor = f"{first} is {where}"
    else:
        first = next(name for name in sorted(expected) if stored[name] != expected[name])
        tensor = (f"{first} is {list(stored[first])} in the checkpoint, {list(expected[first])} "
                  "in this run")
    hparams = checkpoint["hyper_parameters"]
    differ = [f"{key}={_plain(hparams.get(key))!r} (this run: {_plain(module.hparams.get(key))!r})"
              for key in NETWORK_KEYS
              if key in hparams and _plain(hparams.get(key)) != _plain(module.hparams.get(key))]
    settings = f"; the checkpoint has {', '.join(differ)}" if differ else ""
    raise FmcInputError(f"ckpt={path}: its network differs from this run's ({tensor}"
                        f"{settings}); resume with the settings it was trained with")


def _plain(value: Any) -> Any:
    """Lists for tuples, so that ('a', 'b') from a default equals ['a', 'b'] from a config."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _holds(value: Any) -> str:
    if isinstance(value, dict):
        if value and all(hasattr(v, "shape") for v in value.values()):
            return "it holds a bare state_dict: weights without the settings of their network"
        return f"it holds a mapping with keys {sorted(map(str, value))[:6]}"
    return f"it holds a {type(value).__name__}"


# Where a training run keeps its checkpoints, and the one it always writes last.
CHECKPOINTS_FOLDER = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# Whole-volume validation names the best weights so far ``best-step<N>-vnssim<score>.ckpt``
# (best_checkpoint_name); older runs' names held ``nssim<score>`` too.
_SCORE_IN_NAME = re.compile(r"nssim(-?\d+(?:\.\d+)?)")


def best_checkpoint_name(step: int, score: float) -> str:
    """The file name of a run's best weights so far, found again by :func:`selected_checkpoint`."""
    return f"best-step{int(step)}-vnssim{score:.4f}.ckpt"


def selected_checkpoint(run: str | Path, metrics: dict[str, Any] | None = None) -> Path | None:
    """The checkpoint a training run selected, the one way fmc finds it.

    In order: ``best/checkpoint`` recorded in the run's ``metrics.json`` (``metrics`` when given,
    else the file; a path recorded elsewhere, e.g. before the sweep moved, is looked up by its
    name in this run's ``checkpoints/``), else the highest score in a file name of
    ``checkpoints/``, else ``checkpoints/last.ckpt``, else None.
    """
    run = Path(run)
    folder = run / CHECKPOINTS_FOLDER
    if metrics is None:
        metrics = _metrics_if_readable(run / METRICS_FILE)
    recorded = metrics.get("best/checkpoint")
    if recorded:
        recorded = Path(str(recorded))
        for candidate in (recorded, folder / recorded.name):
            if candidate.is_file():
                return candidate
    scored = []
    for path in folder.glob("*.ckpt") if folder.is_dir() else []:
        match = _SCORE_IN_NAME.search(path.stem)
        if match:
            scored.append((float(match.group(1)), path.name, path))
    if scored:
        return max(scored)[2]
    last = folder / LAST_CHECKPOINT
    return last if last.is_file() else None


def _metrics_if_readable(path: Path) -> dict[str, Any]:
    """A run's ``metrics.json`` as a mapping; empty when missing or unreadable (the checkpoint
    names still say which is best)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def load_fusion_module(path: str | Path, device: str = "cpu"):
    """The FusionModule of a checkpoint, loaded as data (``weights_only=True``), in eval mode.

    Raises
    ------
    FmcInputError
        If the file is missing, holds pickled code, is not an fmc checkpoint, or its weights or
        stored channels do not match its network (see :mod:`fmc.models.checkpoint`).
    """
    from fmc.models.module import FusionModule

    path = Path(path)
    if path.is_dir():
        raise FmcInputError(f"ckpt={path}: a folder; give a checkpoint file, or ckpt=auto "
                            f"registry={path} for the models of a run, sweep or models.yaml")
    if not path.is_file():
        raise FmcInputError(f"ckpt={path}: no such checkpoint")
    read_checkpoint(path)  # the clear refusals first: code, bare state_dicts, other files
    try:
        # Trained with model.compile=true or not, prediction compiles only when asked.
        model = FusionModule.load_from_checkpoint(path, map_location=device, weights_only=True,
                                                  compile=False)
    except FmcConfigError as error:  # e.g. a network from a package not installed here
        raise FmcInputError(f"{path}: its network or loss is not available here: {error}; "
                            "install the package that provides it") from None
    except Exception as error:  # noqa: BLE001 - any failure means "not a usable checkpoint"
        raise FmcInputError(f"{path}: {describe_load_error(error)}") from None
    first = next(iter(model.net.parameters()))
    if first.ndim == 5 and first.shape[1] != len(model.hparams.channels):
        raise FmcInputError(f"{path}: the network takes {first.shape[1]} input channels but the "
                            f"checkpoint lists {len(model.hparams.channels)} "
                            f"({', '.join(model.hparams.channels)})")
    return model.eval()
