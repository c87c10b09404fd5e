"""View, prediction and fusion side by side in napari, each in µm (``python -m fmc.view``).

The layers come from fmc's napari reader (:mod:`fmc.io.napari_reader`: TIFF, OME-Zarr or H5,
read lazily), so what ``fmc.view`` shows is what ``napari FILE`` shows. Without a display,
``screenshot=FILE.png`` renders the window off screen (``xvfb-run``), saves it and closes.
The command's settings (``conf/view.yaml``) are read once into :class:`ViewSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fmc.core.config_values import flag, optional_path, whole_number
from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import is_h5, is_tiff, is_zarr, partner_name

WHERE = "conf/view.yaml"
ROLES = ("view", "prediction", "target")
NDISPLAYS = (2, 3)
SCREENSHOT_SIZE = (700, 1500)  # window height, width in pixels


@dataclass(frozen=True)
class ViewSettings:
    """What ``fmc.view`` shows, and how: the keys of ``conf/view.yaml`` (the one home of their
    defaults), read once by :meth:`from_config`. ``verbose`` is read by :mod:`fmc.core.logs`.

    Attributes
    ----------
    view : Path
        The view: a TIFF, an OME-Zarr or an ``fmc.prepare`` H5 file.
    prediction : Path or None
        ``fmc.predict``'s output for it; None: none.
    target : Path or str or None
        The fusion; ``"auto"``: the ``*_fused`` file beside the view when there is one; None:
        none.
    ndisplay : int
        2 (planes, a slider through z) or 3 (volume rendering).
    grid : bool
        Side by side (napari's grid); False: stacked layers.
    screenshot : Path or None
        A PNG to render off screen, save and close; None: a window.
    """

    view: Path
    prediction: Path | None
    target: Path | str | None
    ndisplay: int
    grid: bool
    screenshot: Path | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ViewSettings:
        """The settings of a composed ``conf/view.yaml`` config; the files are read by
        :func:`resolve_files`.

        Raises
        ------
        FmcConfigError
            One line naming the first key whose value cannot be used.
        """
        try:
            ndisplay = whole_number(cfg.ndisplay, "ndisplay", min(NDISPLAYS), WHERE)
        except FmcConfigError:
            ndisplay = None
        if ndisplay not in NDISPLAYS:
            raise FmcConfigError(f"ndisplay={cfg.ndisplay}: choose 2 or 3 ({WHERE})")
        target = "auto" if str(cfg.target) == "auto" else optional_path(cfg.target)
        return cls(view=Path(str(cfg.view)), prediction=optional_path(cfg.prediction),
                   target=target, ndisplay=ndisplay, grid=flag(cfg.grid, "grid", WHERE),
                   screenshot=optional_path(cfg.screenshot))


@dataclass(frozen=True)
class ViewLayer:
    """One napari layer: its role (view, prediction, target), file and reader output."""

    role: str
    path: Path
    data: Any
    attributes: dict


def resolve_files(view: str | Path, prediction: str | Path | None,
                  target: str | Path | None) -> dict[str, Path]:
    """The files to show by role; ``target="auto"`` is the fusion beside the view, if any.

    Raises
    ------
    FmcInputError
        If a given file does not exist or is not a volume fmc reads (the message names the key).
    """
    if target == "auto":
        partner = partner_name(Path(str(view)).name)
        candidate = Path(str(view)).with_name(partner) if partner else None
        target = candidate if candidate is not None and candidate.exists() else None
    files = {}
    for role, value in zip(ROLES, (view, prediction, target), strict=True):
        if value is None:
            continue
        path = Path(str(value))
        if not path.exists():
            raise FmcInputError(f"{role}={path}: no such file")
        if not (is_tiff(path) or is_h5(path) or is_zarr(path)):
            raise FmcInputError(f"{role}={path}: not a TIFF, OME-Zarr or H5 volume")
        files[role] = path
    return files


def view_layers(files: dict[str, Path]) -> list[ViewLayer]:
    """Each file's layers (an H5 gives one per stored channel), named ``role: file``."""
    from fmc.io.napari_reader import read_layers

    layers = []
    for role, path in files.items():
        for data, attributes, _ in read_layers(path):
            attributes = {**attributes, "name": f"{role}: {attributes['name']}"}
            layers.append(ViewLayer(role, path, data, attributes))
    return layers


def show(layers: list[ViewLayer], ndisplay: int = 2, grid: bool = True,
         screenshot: str | Path | None = None):
    """Open the layers in a napari viewer (side by side with ``grid``); with ``screenshot``,
    save the rendered window there and close instead of waiting for the user.

    Returns the screenshot's path, or None after the window is closed by the user.
    """
    if ndisplay not in NDISPLAYS:
        raise FmcConfigError(f"ndisplay={ndisplay}: choose 2 or 3")
    try:
        import napari
    except ImportError:
        raise FmcConfigError("python -m fmc.view needs napari: pip install 'napari[all]'") \
            from None
    # A window is needed even for a screenshot: a hidden canvas renders nothing under Xvfb.
    viewer = napari.Viewer(title="fmc: " + ", ".join(dict.fromkeys(layer.role for layer in layers)))
    for layer in layers:
        viewer.add_image(layer.data, **_supported(layer.attributes))
    grid_owner = getattr(viewer, "canvas", viewer)  # napari ≥ 0.9 moved the grid to the canvas
    if grid and len(layers) > 1:  # one row, the view first
        grid_owner.grid.shape = (1, len(layers))
        grid_owner.grid.enabled = True
    viewer.dims.ndisplay = int(ndisplay)
    if screenshot is not None:
        viewer.window.resize(SCREENSHOT_SIZE[1], SCREENSHOT_SIZE[0])
    viewer.reset_view()
    if screenshot is None:
        napari.run()
        return None
    from qtpy.QtWidgets import QApplication

    from fmc.io.png import write_png

    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=True, flash=False)
    viewer.close()
    return write_png(screenshot, image[..., :3])


def run(settings: ViewSettings) -> list[ViewLayer]:
    """Show the files of ``settings`` (see ``conf/view.yaml``) and say what each layer holds.

    Parameters
    ----------
    settings : ViewSettings
        What to show, and how (:meth:`ViewSettings.from_config`).

    Returns
    -------
    list of ViewLayer
        The layers shown, after the window is closed (or the screenshot written).
    """
    layers = view_layers(resolve_files(settings.view, settings.prediction, settings.target))
    for layer in layers:
        print(f"{layer.attributes['name']}: {layer.data.shape} voxels, scale "
              f"{layer.attributes.get('scale', 'unknown')} µm")
    written = show(layers, settings.ndisplay, settings.grid, settings.screenshot)
    if written is not None:
        print(f"wrote {written}")
    return layers


def _supported(attributes: dict) -> dict:
    # ``units`` appeared in napari 0.5; earlier viewers refuse the keyword.
    import inspect

    import napari

    accepted = inspect.signature(napari.Viewer.add_image).parameters
    return {key: value for key, value in attributes.items() if key in accepted}
