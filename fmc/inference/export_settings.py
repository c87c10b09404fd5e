"""What ``python -m fmc.export`` does: its settings (:class:`ExportSettings`, the keys of
``conf/export.yaml``, read once), checked before torch or the checkpoint is loaded.

The export itself is :func:`fmc.inference.export.run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmc.core.config_values import whole_numbers
from fmc.core.errors import FmcConfigError

WHERE = "conf/export.yaml"
# The formats fmc.export writes (fmc.inference.export; bioimageio: fmc.inference.model_zoo).
FORMATS = ("torchscript", "onnx", "bioimageio")


@dataclass(frozen=True)
class ExportSettings:
    """What ``fmc.export`` writes: the keys of ``conf/export.yaml`` (the one home of their
    defaults), read once by :meth:`from_config`. ``verbose`` is read by :mod:`fmc.core.logs`.

    Attributes
    ----------
    ckpt : Path
        A checkpoint written by ``fmc.train``.
    format : str
        ``torchscript``, ``onnx`` or ``bioimageio`` (:data:`FORMATS`).
    output : Path
        The file to write; its card and facts go beside it.
    patch : tuple of 3 ints or None
        ZYX tile of the check against the checkpoint; None: the checkpoint's training patch.
    sample : Path or None
        ``bioimageio``: an angle H5 file of ``fmc.prepare`` for the test tensors and the cover;
        None: the embedded dataset's.
    zoo : Mapping or None
        ``bioimageio``: the package's ``name`` (str or None: named after the study and
        content), ``authors`` (tuple of str) and ``license`` (an SPDX identifier); None: those
        of :func:`fmc.inference.model_zoo.export_bioimageio`.
    """

    ckpt: Path
    format: str
    output: Path
    patch: tuple[int, int, int] | None
    sample: Path | None
    zoo: Mapping[str, Any] | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ExportSettings:
        """The settings of a composed ``conf/export.yaml`` config; the files are read by
        :func:`fmc.inference.export.export_checkpoint`.

        Raises
        ------
        FmcConfigError
            One line naming the first key whose value cannot be used.
        """
        if str(cfg.format) not in FORMATS:
            raise FmcConfigError(f"format={cfg.format}: choose one of {', '.join(FORMATS)} "
                                 f"({WHERE})")
        patch = None if cfg.patch is None else whole_numbers(cfg.patch, "patch", 3, 1, WHERE)
        return cls(ckpt=Path(str(cfg.ckpt)), format=str(cfg.format), output=Path(str(cfg.output)),
                   patch=patch, sample=None if cfg.sample is None else Path(str(cfg.sample)),
                   zoo=None if cfg.zoo is None else _zoo(cfg.zoo))


def _zoo(zoo: DictConfig) -> dict[str, Any]:
    """``zoo.name``, ``zoo.authors`` (one name or a list) and ``zoo.license`` as plain values."""
    authors = OmegaConf.to_object(zoo.authors) if OmegaConf.is_config(zoo.authors) else \
        zoo.authors
    if authors is not None and not isinstance(authors, list):
        authors = [authors]
    return {"name": None if zoo.name is None else str(zoo.name),
            "authors": tuple(str(author) for author in authors or ()),
            "license": str(zoo.license)}
