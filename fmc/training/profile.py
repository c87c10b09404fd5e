"""Which machine profile a training run composes (``profile=cpu|gpu|auto``; conf/profile/).

The defaults are GPU-sized (the seed's 64×256×256 patches); ``profile=cpu`` swaps in a network
and patch a CPU trains in minutes. ``auto`` is decided here, before Hydra composes the config,
by rewriting the command line: ``--cfg job`` then prints the network and patch that will train,
and the run's ``.hydra/overrides.yaml`` records the profile it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PROFILES = ("auto", "cpu", "gpu")
_CPU_OVERRIDES = ("trainer=cpu", "trainer=ddp_cpu", "trainer.accelerator=cpu")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_profile(overrides: Sequence[str], gpu_available: Callable[[], bool] = _cuda_available
                   ) -> str:
    """``cpu`` or ``gpu`` for ``profile=auto``.

    cpu when the command asks for the CPU trainer, or when no CUDA device is visible; else gpu.
    ``gpu_available`` is called only when the command line does not decide.
    """
    if any(item.lstrip("+~") in _CPU_OVERRIDES for item in overrides):
        return "cpu"
    return "gpu" if gpu_available() else "cpu"


def with_profile(argv: Sequence[str], gpu_available: Callable[[], bool] = _cuda_available
                 ) -> list[str]:
    """``argv`` with ``profile=auto`` (given or implied) replaced by ``profile=cpu|gpu``.

    An explicit ``profile=cpu``, ``profile=gpu`` or a sweep over profiles is left alone.
    """
    argv = list(argv)
    positions = [i for i, item in enumerate(argv) if item.split("=", 1)[0] == "profile"]
    if positions and any(argv[i] != "profile=auto" for i in positions):
        return argv
    choice = f"profile={choose_profile(argv[1:], gpu_available)}"
    if positions:
        for i in positions:
            argv[i] = choice
    else:
        argv.append(choice)
    return argv


def profile_choice() -> str | None:
    """The profile this Hydra run composed (None outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get("profile")
    except (ImportError, ValueError):
        return None
