"""Which machine profile a training run composes (``profile=cpu|gpu|auto``; conf/profile/).

The defaults are GPU-sized (RWTH-GE's 64×256×256 patches); ``profile=cpu`` swaps in a network
and patch a CPU trains in minutes. ``auto`` is decided here, before Hydra composes the config,
by rewriting the command line: ``--cfg job`` then prints the network and patch that will train,
and the run's ``.hydra/overrides.yaml`` records the profile it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fmc.core.command_line import split_command_line

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
    options, overrides = split_command_line(argv[1:])
    given = [item for item in overrides if item.split("=", 1)[0] == "profile"]
    if any(item != "profile=auto" for item in given):
        return list(argv)
    choice = f"profile={choose_profile(overrides, gpu_available)}"
    overrides = [item for item in overrides if item not in given] + [choice]
    return [argv[0], *options, *overrides]


def profile_choice() -> str | None:
    """The profile this Hydra run composed (None outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get("profile")
    except (ImportError, ValueError):
        return None


def with_study_facts(argv: Sequence[str]) -> list[str]:
    """``argv`` plus the facts of every known study (conf/studies/, ``FMC_CONFIG_DIRS``) under
    ``study_facts``, and the extra config folders on Hydra's search path.

    The facts are then part of the composed config: ``--cfg job`` prints them and the W&B
    config and the run's ``.hydra/config.yaml`` hold them. Left alone when the command line
    already selects ``studies``.
    """
    from fmc.core.studies import STUDIES, extra_config_dirs

    options, overrides = split_command_line(argv[1:])
    if any(item.lstrip("+~").split("=", 1)[0] == "studies" for item in overrides):
        return list(argv)
    added = [f"+studies=[{','.join(f'study{n}' for n in STUDIES)}]"]
    extra = [folder.resolve().as_uri() for folder in extra_config_dirs()]
    if extra and not any(item.startswith("hydra.searchpath=") for item in overrides):
        added.append(f"hydra.searchpath=[{','.join(extra)}]")
    return [argv[0], *options, *overrides, *added]
