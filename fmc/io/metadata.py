"""Volume metadata: what a TIFF says about study, content and voxel size, and what fmc writes back.

Fuse My Cells files are 3D ZYX TIFFs whose metadata say which study and which content (``channel``:
nucleus or membrane) they hold and their voxel size (``physical_size_x/y/z``). Tools write these
facts in different places; :func:`meta_from` looks in all of them, in this order (first found wins
per key):

1. tifffile's *shaped* JSON description (how the challenge files carry their keys),
2. ImageJ hyperstack metadata (``spacing``, ``unit`` and any extra ``key=value`` lines),
3. OME-XML ``Pixels`` attributes (``PhysicalSizeX/Y/Z`` with their units),
4. plain ``key=value`` lines in the ImageDescription (RWTH-GE's parser),
5. the XResolution / YResolution tags for the lateral voxel size.

:func:`description_keys` gives the keys :mod:`fmc.io.tiff` writes into a volume's description.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fmc.core.studies import parse_content, parse_study

log = logging.getLogger(__name__)

# Length units to micrometres.
_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
               "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3,
               "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6}
# TIFF ResolutionUnit tag values to micrometres per unit (1 = none: the file's 'unit' key decides).
_RESUNIT_TO_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
# Keys whose value tifffile or fmc derives from the array; never copied from a source file.
_DERIVED_KEYS = {"shape", "imagej", "images", "slices", "frames", "channels", "hyperstack", "mode",
                 "loop", "min", "max"}


@dataclass(frozen=True)
class VolumeMeta:
    """What fmc knows about a volume besides its voxels.

    Attributes
    ----------
    study : int or None
        Fuse My Cells study number (1-5 in the challenge data), None if absent or not an integer.
    content : {'nucleus', 'membrane'} or None
        What the volume shows, read from the ``channel`` key (case-insensitive).
    spacing_zyx : tuple of 3 floats or None
        Voxel size in micrometres, Z then Y then X; None unless all three are known.
    dtype : str or None
        NumPy dtype name of the stored voxels.
    shape : tuple of 3 ints or None
        ZYX shape after singleton axes were squeezed.
    original : dict
        Every key/value found in the file, as read (JSON-serialisable scalars).
    """

    study: int | None = None
    content: str | None = None
    spacing_zyx: tuple[float, float, float] | None = None
    dtype: str | None = None
    shape: tuple[int, int, int] | None = None
    original: dict[str, Any] = field(default_factory=dict)

    def with_array(self, array: np.ndarray) -> VolumeMeta:
        """Return a copy whose dtype and shape describe ``array``."""
        return replace(self, dtype=str(array.dtype), shape=tuple(int(s) for s in array.shape))


def _unit_factor(unit: Any) -> float | None:
    if unit is None:
        return None
    return _UNIT_TO_UM.get(str(unit).strip().lower().replace("\\u00b5", "µ"))


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _parse_key_value_lines(text: str) -> dict[str, Any]:
    """Parse ``key=value`` (or ``key: value``) lines, converting numbers."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_][\w .-]*?)\s*[=:]\s*(.*?)\s*", line)
        if not match:
            continue
        key, raw = match.group(1), match.group(2)
        for convert in (int, float):
            try:
                found[key] = convert(raw)
                break
            except ValueError:
                continue
        else:
            found[key] = raw
    return found


def _ome_keys(ome_xml: str) -> dict[str, Any]:
    """Physical sizes (in µm) from the first OME ``Pixels`` element."""
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    found: dict[str, Any] = {}
    for axis in "XYZ":
        size = _as_float(pixels.get(f"PhysicalSize{axis}"))
        factor = _unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if size is not None and factor is not None:
            found[f"physical_size_{axis.lower()}"] = size * factor
    return found


def _lookup(keys: dict[str, Any], *names: str) -> Any:
    """Value of the first of ``names`` in ``keys``, ignoring case and '_'/' ' separators."""
    folded = {re.sub(r"[_\s]", "", str(k)).lower(): v for k, v in keys.items()}
    for name in names:
        value = folded.get(re.sub(r"[_\s]", "", name).lower())
        if value is not None:
            return value
    return None


def _spacing_from_keys(keys: dict[str, Any], page: tifffile.TiffPage, path: Path) -> tuple | None:
    """ZYX spacing in µm from the gathered keys, then from the resolution tags."""
    unit = _lookup(keys, "unit")
    factor = 1.0 if unit is None else _unit_factor(unit)
    if factor is None:
        # 'pixel' (ImageJ's uncalibrated images) or 'parsec': what it qualifies is no voxel size.
        log.warning("%s: unit %r is not a length unit fmc reads (%s); the Z step and resolution "
                    "given in it are ignored", path, unit, "um, µm, micron, nm, mm, cm, m")
    z = _as_float(_lookup(keys, "physical_size_z", "PhysicalSizeZ"))
    y = _as_float(_lookup(keys, "physical_size_y", "PhysicalSizeY"))
    x = _as_float(_lookup(keys, "physical_size_x", "PhysicalSizeX"))
    if z is None:
        # ImageJ's 'spacing' is the Z step, in the description's unit.
        spacing = _as_float(_lookup(keys, "spacing"))
        z = spacing * factor if spacing is not None and factor is not None else None
    if x is None or y is None:
        x_res, y_res = _resolution_um(page, factor)
        x = x if x is not None else x_res
        y = y if y is not None else y_res
    if None in (z, y, x):
        return None
    return (float(z), float(y), float(x))


def _resolution_um(page: tifffile.TiffPage, unit_factor: float | None
                   ) -> tuple[float | None, float | None]:
    """Voxel width/height in µm from XResolution/YResolution (pixels per resolution unit)."""
    sizes = []
    unit_tag = page.tags.get("ResolutionUnit")
    per_unit_um = _RESUNIT_TO_UM.get(int(unit_tag.value) if unit_tag else 2)
    if unit_tag is not None and int(unit_tag.value) == 1:
        per_unit_um = unit_factor  # no unit in the tag: the description's unit (µm by default)
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None or per_unit_um is None:
            sizes.append(None)
            continue
        numerator, denominator = tag.value
        pixels_per_unit = numerator / denominator if denominator else 0.0
        size_um = per_unit_um / pixels_per_unit if pixels_per_unit > 0 else None
        # tifffile writes (1, 1) when no resolution is given, and an inch unit usually holds a
        # printing DPI: a "voxel" above 100 µm is no microscope's, so it is no information.
        if size_um is None or numerator == denominator or size_um > 100.0:
            sizes.append(None)
        else:
            sizes.append(size_um)
    return sizes[0], sizes[1]


def _gather_keys(tif: tifffile.TiffFile) -> dict[str, Any]:
    """All key/values the file carries, the most specific source first (see module doc)."""
    keys: dict[str, Any] = {}

    def add(source: dict[str, Any] | None) -> None:
        for key, value in (source or {}).items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                keys.setdefault(str(key), value)
            elif isinstance(value, (list, tuple)) and all(
                    isinstance(v, (str, int, float, bool)) for v in value):
                keys.setdefault(str(key), list(value))

    shaped = tif.shaped_metadata
    if shaped:
        add(shaped[0])
    add(tif.imagej_metadata)
    if tif.ome_metadata:
        add(_ome_keys(tif.ome_metadata))
    page = tif.pages.first
    for description in (page.description, page.description1):
        if description and not description.lstrip().startswith(("{", "<")):
            add(_parse_key_value_lines(description))
    return keys


def meta_from(tif: tifffile.TiffFile, path: Path) -> VolumeMeta:
    """Study, content, spacing and original keys of an open TIFF (dtype/shape not set)."""
    keys = _gather_keys(tif)
    spacing = _spacing_from_keys(keys, tif.pages.first, path)
    study_value = _lookup(keys, "study")
    study = parse_study(study_value)
    if study_value is not None and study is None:
        log.warning("%s: study %r is not an integer; treated as unknown", path, study_value)
    content_value = _lookup(keys, "channel", "content")
    content = parse_content(content_value)
    if content_value is not None and content is None:
        log.warning("%s: channel %r is neither nucleus nor membrane; treated as unknown",
                    path, content_value)
    original = {k: v for k, v in keys.items() if k.lower() not in _DERIVED_KEYS | {"imagej"}}
    return VolumeMeta(study=study, content=content, spacing_zyx=spacing, original=original)


def description_keys(meta: VolumeMeta) -> dict[str, Any]:
    """The key/values to store: the original ones, updated with what ``meta`` says."""
    keys = {k: v for k, v in meta.original.items()
            if k.lower() not in _DERIVED_KEYS and k != "ImageJ"}
    keys["axes"] = "ZYX"
    if meta.content is not None:
        keys["channel"] = meta.content
    if meta.study is not None and parse_study(keys.get("study")) != meta.study:
        keys["study"] = str(meta.study)
    if meta.spacing_zyx is not None:
        z, y, x = (float(s) for s in meta.spacing_zyx)
        keys.update(physical_size_x=x, physical_size_y=y, physical_size_z=z, spacing=z, unit="um")
    # ImageJ description lines cannot hold line breaks or nested values.
    return {k: v for k, v in keys.items()
            if isinstance(v, (str, int, float, bool)) and "\n" not in str(k) + str(v)}


def describe(meta: VolumeMeta) -> str:
    """One line summarising ``meta`` for logs."""
    spacing = "unknown" if meta.spacing_zyx is None else "×".join(f"{s:g}" for s in meta.spacing_zyx)
    return (f"study={meta.study} content={meta.content} shape={meta.shape} dtype={meta.dtype} "
            f"spacing_zyx_um={spacing}")


def to_json(meta: VolumeMeta) -> str:
    """JSON text of ``meta`` (for H5 attributes and logs)."""
    return json.dumps({"study": meta.study, "content": meta.content,
                       "spacing_zyx": meta.spacing_zyx, "dtype": meta.dtype,
                       "shape": meta.shape, "original": meta.original})
