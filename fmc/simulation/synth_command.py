"""What ``python -m fmc.synth`` does: its settings (:class:`SynthCommandSettings`, the keys of
``conf/synth.yaml``, read once) and :func:`run`, which writes the pairs.

The pairs themselves are made by :mod:`fmc.simulation.synth`; this module works without Hydra.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmc.core.config_values import flag, whole_number, whole_numbers
from fmc.core.errors import FmcConfigError
from fmc.core.protected import refuse_overwriting
from fmc.core.studies import check_content, get_profile
from fmc.simulation.lightsheet import FusionParams, OpticsParams
from fmc.simulation.specimen import SpecimenParams
from fmc.simulation.synth import (
    SynthSettings,
    check_field_of_view,
    check_target,
    is_synthetic,
    pair_paths,
    resolve_geometry,
    study_params,
    write_pair,
)

log = logging.getLogger("fmc.synth")

WHERE = "conf/synth.yaml"


@dataclasses.dataclass(frozen=True)
class SynthCommandSettings:
    """What ``fmc.synth`` writes: the keys of ``conf/synth.yaml`` (the one home of their
    defaults), read once by :meth:`from_config`. ``verbose`` is read by :mod:`fmc.core.logs`.

    Attributes
    ----------
    output : Path
        Folder the pairs go into (created).
    study : int
        1-5: the study whose spacing, degradation axes, specimen and optics are simulated.
    content : str
        ``nucleus`` or ``membrane``.
    n, start : int
        Number of pairs, and the index of the first.
    shape : tuple of 3 ints or None
        ZYX voxels; None: the study's demo shape.
    scale : float or None
        Spacing = study spacing × scale; None: the demo scale for the demo shape, else 1.
    seed : int
        Same seed (and study, content, index): byte-identical files.
    target : str
        ``fusion`` or ``clean``.
    field_of_view : str
        ``inside`` or ``fill``.
    png : bool
        Also save a max-projection PNG of each pair.
    specimen, optics, fusion : Mapping
        Changes to :class:`SpecimenParams`, :class:`OpticsParams` (both on top of the study's
        own) and :class:`FusionParams` (on top of its defaults), field: value.
    """

    output: Path
    study: int
    content: str
    n: int
    start: int
    shape: tuple[int, int, int] | None
    scale: float | None
    seed: int
    target: str
    field_of_view: str
    png: bool
    specimen: Mapping[str, Any]
    optics: Mapping[str, Any]
    fusion: Mapping[str, Any]

    @classmethod
    def from_config(cls, cfg) -> SynthCommandSettings:
        """The settings of a composed ``conf/synth.yaml`` config, checked before any pair is
        simulated (a specimen too small for its volume is found while simulating).

        Raises
        ------
        FmcConfigError
            Without ``output``, or naming the first other key whose value cannot be used.
        """
        if cfg.output is None:
            raise FmcConfigError("missing 'output': add output=DIR to the command line")
        study = get_profile(cfg.study).study
        content = check_content(str(cfg.content))
        count = whole_number(cfg.n, "n", 1, WHERE)
        first = whole_number(cfg.start, "start", 0, WHERE)
        seed = whole_number(cfg.seed, "seed", 0, WHERE)
        specimen = _overrides(SpecimenParams, cfg.specimen)
        optics = _overrides(OpticsParams, cfg.optics)
        fusion = _overrides(FusionParams, cfg.fusion)
        shape = None if cfg.shape is None else whole_numbers(cfg.shape, "shape", 3, 1, WHERE)
        target = check_target(str(cfg.target))
        resolve_geometry(study, shape, cfg.scale)  # a bad scale: its one line, before any work
        return cls(output=Path(str(cfg.output)), study=study, content=content, n=count,
                   start=first, shape=shape, scale=None if cfg.scale is None else float(cfg.scale),
                   seed=seed, target=target,
                   field_of_view=check_field_of_view(str(cfg.field_of_view)),
                   png=flag(cfg.png, "png", WHERE), specimen=specimen, optics=optics,
                   fusion=fusion)

    def simulation(self) -> SynthSettings:
        """The simulation's :class:`SynthSettings`: the study's own specimen and optics with
        ``specimen``/``optics`` changed (None where nothing changes), ``fusion`` on the defaults."""
        own_specimen, own_optics = study_params(self.study, dict(self.specimen), dict(self.optics))
        return SynthSettings(specimen=own_specimen if self.specimen else None,
                             optics=own_optics if self.optics else None,
                             fusion=FusionParams(**self.fusion), target=self.target,
                             field_of_view=self.field_of_view)


def _overrides(kind: type, section: Any) -> dict[str, Any]:
    """The ``kind`` fields a config group changes (``+optics.photons=500``), checked by name."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    found = dict(section or {})
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(found) - names)
    if unknown:
        raise FmcConfigError(f"unknown {kind.__name__} key(s) {unknown}: valid keys are "
                             f"{', '.join(sorted(names))}")
    # YAML lists arrive as lists; the dataclasses hold tuples (hashable, frozen).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in found.items()}


def run(settings: SynthCommandSettings) -> list[Path]:
    """Write ``settings.n`` pairs of ``settings.study``/``settings.content`` into
    ``settings.output``.

    Parameters
    ----------
    settings : SynthCommandSettings
        What to write (:meth:`SynthCommandSettings.from_config` of ``conf/synth.yaml``).

    Returns
    -------
    list of Path
        The files written, angle and fused of each pair.
    """
    simulation = settings.simulation()
    indices = range(settings.start, settings.start + settings.n)
    for index in indices:  # before any work: nothing of the user's replaced
        for path in pair_paths(settings.output, index, settings.content):
            refuse_overwriting(path, [], "output", made_by_fmc=is_synthetic)
    written = []
    for index in indices:
        started = time.perf_counter()
        paths = write_pair(settings.output, settings.study, settings.content, index,
                           shape=None if settings.shape is None else list(settings.shape),
                           seed=settings.seed, scale=settings.scale, settings=simulation)
        log.info("wrote %s and %s (%.1f s)", paths[0], paths[1].name,
                 time.perf_counter() - started)
        if settings.png:
            from fmc.io.preview import save_pair_png
            png = paths[0].with_name(paths[0].name.replace("_angle.tif", "_pair.png"))
            save_pair_png(paths[0], paths[1], png)
            log.info("wrote %s", png)
        written.extend(paths)
    return written
