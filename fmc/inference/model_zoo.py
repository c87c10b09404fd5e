"""A checkpoint as a BioImage Model Zoo package (spec 0.5): ``python -m fmc.export format=bioimageio``.

What the package holds (a zip, ``out``):

- ``rdf.yaml``: inputs ``raw`` (the view's intensities, as recorded) and, for each distance
  channel of the checkpoint, its values in µm as ``python -m fmc.prepare`` writes them (named and
  described by its spec, :mod:`fmc.preprocessing.channel_specs`); output ``fused`` on the view's
  normalised scale. The percentile normalisation is the package's preprocessing
  (``scale_range`` 2 / 99.8, per sample: give the whole volume to get fmc's whole-volume
  normalisation); the ``tanh(d / scale)`` of the distance channels is inside the network.
- weights: ``pytorch_state_dict`` with an architecture file made of fmc's own network code
  (:mod:`fmc.inference.zoo_architecture`) and ``torchscript``;
- test tensors cut from a prepared volume (``sample``), a cover (view | prediction, maximum
  projections) and the model card (``README.md``: inputs, how to compute the distance channel,
  the run's configuration and scores).

Every package is checked before it is kept: ``bioimageio.core``'s model test runs each weight
format on the test tensors offline; a failed test leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.files import atomic_path
from fmc.core.normalization import PERCENTILE_HIGH, PERCENTILE_LOW
from fmc.inference.model_card import distance_scales, study_label, zoo_card
from fmc.inference.packages import sha256_of
from fmc.inference.tile_function import TileFunction, ZooTileFunction
from fmc.inference.zoo_architecture import (
    ARCHITECTURE_CALLABLE,
    ARCHITECTURE_FILE,
    architecture_kwargs,
    architecture_source,
    check_packable,
    environment_text,
)

log = logging.getLogger("fmc.export")

SPEC_VERSION = "0.5.4"
ZOO_EPS = 1e-6  # scale_range's eps: (x - p_low) / (p_high - p_low + eps)
NETWORK_INPUT = "raw"
NETWORK_OUTPUT = "fused"
AXES = ("z", "y", "x")
COVER_MIN_HEIGHT = 256
ZOO_NAME = re.compile(r"[A-Za-z0-9_+\- ()]+")  # the spec's characters for a name


# ----------------------------------------------------------------------------------------------
# Test tensors and cover
# ----------------------------------------------------------------------------------------------
def sample_tile(sample: Path, channels: list[str], tile: tuple[int, int, int]
                ) -> dict[str, np.ndarray]:
    """The view (recorded intensities) and distance channels (µm) of ``tile`` voxels around the
    centre of the prepared volume ``sample``, each ``(1, 1, Z, Y, X)`` float32 (padded by reflection
    when the volume is smaller)."""
    import h5py

    from fmc.data.patches import centred_origin, pad_to_patch
    from fmc.io.h5 import is_complete, read_attrs
    from fmc.preprocessing.channel_specs import CHANNELS, VIEW

    if not is_complete(sample):
        raise FmcInputError(f"sample={sample}: not a complete fmc H5 file (give an angle file "
                            "written by python -m fmc.prepare)")
    attrs = read_attrs(sample)
    low, high = attrs.get("percentile_low"), attrs.get("percentile_high")
    tensors = {}
    with h5py.File(sample, "r") as handle:
        missing = [CHANNELS[n].dataset for n in channels if CHANNELS[n].dataset not in handle]
        if missing:
            raise FmcInputError(f"sample={sample}: no {', '.join(missing)} (the checkpoint "
                                f"needs {', '.join(channels)}; run fmc.prepare again)")
        shape = handle[CHANNELS[channels[0]].dataset].shape
        centre = [n // 2 for n in shape]
        origin = centred_origin(centre, tile, shape)
        window = tuple(slice(int(o), int(o) + t) for o, t in zip(origin, tile, strict=True))
        for name in channels:
            values = np.asarray(handle[CHANNELS[name].dataset][window], dtype=np.float32)
            if name == VIEW and low is not None and high is not None:  # back to as recorded
                values = values * np.float32(float(high) - float(low)) + np.float32(low)
            key = NETWORK_INPUT if name == VIEW else name
            tensors[key] = pad_to_patch(values, tile)[None, None].astype(np.float32)
    return tensors


def zoo_normalise(raw: np.ndarray) -> np.ndarray:
    """The package's preprocessing of ``raw``, as ``bioimageio.core`` applies it (per sample)."""
    low, high = np.percentile(raw, [PERCENTILE_LOW, PERCENTILE_HIGH])
    return ((raw - low) / (high - low + ZOO_EPS)).astype(np.float32)


def cover_image(view: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """View | prediction, XY maximum projections on one window, 2:1 (the zoo's cover shape)."""
    from fmc.io.png import percentile_window, to_uint8

    view_xy, prediction_xy = view.max(axis=0), prediction.max(axis=0)
    low, high = percentile_window(np.concatenate([view_xy, prediction_xy]), (1, 99.9))
    pair = np.concatenate([to_uint8(view_xy, low, high), to_uint8(prediction_xy, low, high)],
                          axis=1)
    height, width = pair.shape
    if width < 2 * height:  # pad to 2:1 with black bars left and right
        side = (2 * height - width) // 2
        pair = np.pad(pair, ((0, 0), (side, 2 * height - width - side)))
    zoom = max(1, -(-COVER_MIN_HEIGHT // pair.shape[0]))  # tiles are small: whole voxels bigger
    return np.repeat(np.repeat(pair, zoom, axis=0), zoom, axis=1)


# ----------------------------------------------------------------------------------------------
# The description and the package
# ----------------------------------------------------------------------------------------------
def _space_axes(spacing, size) -> list[dict]:
    return [{"type": "space", "id": axis, "size": size(axis), "unit": "micrometer",
             "scale": float(step)} for axis, step in zip(AXES, spacing, strict=True)]


def _weights_entries(model, files: dict[str, Path]) -> dict:
    """The rdf's ``weights``: TorchScript, and the state dict with its architecture and
    environment when the package has them (TorchScript then names it its parent)."""
    torch_version = torch.__version__.split("+")[0]
    weights = {"torchscript": {"source": files["torchscript"].name,
                               "sha256": sha256_of(files["torchscript"]),
                               "pytorch_version": torch_version}}
    if "state_dict" in files:
        weights["pytorch_state_dict"] = {
            "source": files["state_dict"].name, "sha256": sha256_of(files["state_dict"]),
            "pytorch_version": torch_version,
            "dependencies": {"source": files["environment"].name,
                             "sha256": sha256_of(files["environment"])},
            "architecture": {"source": files["architecture"].name,
                             "sha256": sha256_of(files["architecture"]),
                             "callable": ARCHITECTURE_CALLABLE,
                             "kwargs": architecture_kwargs(model)}}
        weights["torchscript"]["parent"] = "pytorch_state_dict"
    return weights


def describe(model, files: dict[str, Path], name: str, authors: list[str], license_id: str,
             documentation: Path, cover: Path) -> dict:
    """The package's ``rdf.yaml`` content (spec 0.5) for ``model`` and the written ``files``."""
    import lightning

    hp = model.hparams
    divisor = int(model.net.required_divisor)
    spacing = [float(s) for s in (hp.get("spacing_zyx") or (1.0, 1.0, 1.0))]
    free = {"min": divisor, "step": divisor}
    inputs = [{"id": NETWORK_INPUT, "description": "the view, recorded intensities",
               "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["view"]},
                        *_space_axes(spacing, lambda axis: free)],
               "test_tensor": {"source": files[NETWORK_INPUT].name,
                               "sha256": sha256_of(files[NETWORK_INPUT])},
               "preprocessing": [{"id": "scale_range", "kwargs": {
                   "axes": list(AXES), "min_percentile": PERCENTILE_LOW,
                   "max_percentile": PERCENTILE_HIGH, "eps": ZOO_EPS}}]}]
    from fmc.preprocessing.channel_specs import CHANNELS

    for channel in hp.channels[1:]:
        spec = CHANNELS[channel]
        inputs.append({
            "id": channel, "description": f"{spec.description} (fmc.prepare: {spec.dataset})",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": [channel]},
                     *_space_axes(spacing, lambda axis: {"tensor_id": NETWORK_INPUT,
                                                         "axis_id": axis})],
            "test_tensor": {"source": files[channel].name, "sha256": sha256_of(files[channel])}})
    outputs = [{"id": NETWORK_OUTPUT, "description": "the predicted fusion, on the view's "
                "normalised scale ((x - p2) / (p99.8 - p2) of the view)",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["fused"]},
                         *_space_axes(spacing, lambda axis: {"tensor_id": NETWORK_INPUT,
                                                             "axis_id": axis})],
                "test_tensor": {"source": files[NETWORK_OUTPUT].name,
                                "sha256": sha256_of(files[NETWORK_OUTPUT])}}]
    weights = _weights_entries(model, files)
    return {
        "format_version": SPEC_VERSION, "type": "model", "name": name,
        "description": (f"fmc: one light-sheet view to its multi-view fusion "
                        f"({study_label(model, ', ')}; {hp.get('content')})"),
        "authors": [{"name": author} for author in authors], "license": license_id,
        "cite": [{"text": "Fuse My Cells challenge, ISBI 2025",
                  "url": "https://fusemycells.grand-challenge.org/"}],
        "tags": ["3d", "light-sheet", "image-restoration", "fusion", "unet", "pytorch",
                 str(hp.get("content"))],
        "documentation": documentation.name, "covers": [cover.name],
        "inputs": inputs, "outputs": outputs, "weights": weights,
        "config": {"fmc": {"study": hp.get("study"), "content": hp.get("content"),
                           "channels": list(hp.channels), "network": hp.get("network", "unet3d"),
                           "patch_size": [int(n) for n in hp.patch_size],
                           "fallback": hp.get("fallback", "none"),
                           "lightning_version": lightning.__version__}}}


def write_package_files(model, folder: Path, sample: Path, tile: tuple[int, int, int]
                        ) -> tuple[dict[str, Path], float]:
    """Weights, test tensors and cover of ``model`` in ``folder``: their paths by role, and the
    largest difference between the package's function and fmc's module on the test tile."""
    from fmc.preprocessing.channel_specs import scale_channel

    tensors = sample_tile(sample, list(model.hparams.channels), tile)
    function = ZooTileFunction(TileFunction.of_module(model), distance_scales(model)).eval()
    inputs = [torch.from_numpy(zoo_normalise(tensors[NETWORK_INPUT]))]
    inputs += [torch.from_numpy(tensors[name]) for name in model.hparams.channels[1:]]
    with torch.no_grad():
        expected = function(*inputs).numpy()
        if not np.isfinite(expected).all():
            raise FmcInputError("the checkpoint's output on the sample tile is not finite")
        # fmc's own path: the channels scaled as training scaled them, the module's forward
        stacked = [inputs[0].numpy()] + [
            scale_channel(name, tensors[name], scale) for name, scale in
            zip(model.hparams.channels[1:], distance_scales(model), strict=True)]
        reference = model(torch.from_numpy(np.concatenate(stacked, axis=1))).numpy()
        with warnings.catch_warnings():  # shape checks become constants: sizes stay free
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(function, tuple(inputs))
    files = {}
    for key, values in {**tensors, NETWORK_OUTPUT: expected}.items():
        files[key] = folder / f"test_{key}.npy"
        np.save(files[key], values)
    files["torchscript"] = folder / "weights_torchscript.pt"
    traced.save(str(files["torchscript"]))
    files["state_dict"] = folder / "weights_state_dict.pt"
    torch.save(function.state_dict(), files["state_dict"])
    files["architecture"] = folder / ARCHITECTURE_FILE
    files["architecture"].write_text(architecture_source())
    files["environment"] = folder / "environment.yaml"
    files["environment"].write_text(environment_text(model))
    files["cover"] = folder / "cover.png"
    from fmc.io.png import write_png

    write_png(files["cover"], cover_image(inputs[0][0, 0].numpy(), expected[0, 0]))
    return files, float(np.max(np.abs(expected - reference)))


def _first_failure(summary) -> str:
    for detail in summary.details:
        if detail.status == "failed":
            errors = "; ".join(str(e.msg) for e in detail.errors[:2])
            return f"{detail.name}: {errors}"[:400]
    return summary.status


def export_bioimageio(model, checkpoint: Path, out: Path, sample: Path,
                      tile: tuple[int, int, int], name: str | None = None,
                      authors: list[str] | None = None, license_id: str = "MIT") -> float:
    """Write ``model`` as a BioImage Model Zoo package (zip) at ``out`` after its model test.

    Returns the largest difference between the package's tile function and fmc's module on the
    test tile (the test tensors come from ``tile`` voxels of the prepared volume ``sample``).

    Raises
    ------
    FmcConfigError
        If ``bioimageio.core`` is not installed.
    FmcInputError
        If the description is invalid or ``bioimageio.core``'s model test fails (nothing kept).
    """
    try:
        from bioimageio.core import test_model
        from bioimageio.spec import (
            InvalidDescr,
            ValidationContext,
            build_description,
            save_bioimageio_package,
        )
    except ImportError:
        raise FmcConfigError("format=bioimageio needs the bioimageio extra: "
                             "pip install -e '.[bioimageio]'") from None
    check_packable(model)
    hp = model.hparams
    name = name or f"fmc {study_label(model, '-')} {hp.get('content')}"
    if not ZOO_NAME.fullmatch(name):
        raise FmcConfigError(f"zoo.name={name!r}: the zoo allows letters, digits, spaces and "
                             "_ + - ( ) only")
    with tempfile.TemporaryDirectory(prefix="fmc-bioimageio-") as temporary:
        folder = Path(temporary)
        files, difference = write_package_files(model, folder, sample, tile)
        documentation = folder / "README.md"
        documentation.write_text(zoo_card(model, checkpoint))
        rdf = describe(model, files, name, list(authors or ["fmc"]), license_id,
                       documentation, files["cover"])
        with ValidationContext(root=folder, perform_io_checks=True):
            description = build_description(rdf)
        if isinstance(description, InvalidDescr):
            raise FmcInputError(f"{out}: the package description is invalid: "
                                f"{_first_failure(description.validation_summary)}")
        packed = folder / "package.zip"
        save_bioimageio_package(description, output_path=packed)
        summary = test_model(packed)
        if summary.status != "passed":
            raise FmcInputError(f"{out}: bioimageio.core's model test failed "
                                f"({_first_failure(summary)}); nothing kept")
        log.info("bioimageio.core model test passed: %s",
                 ", ".join(sorted(description.weights.available_formats)))
        with atomic_path(out) as final:
            shutil.copyfile(packed, final)
    return difference
