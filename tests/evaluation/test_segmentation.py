"""The N_IoU-like segmentation score: resampling, proxy segmentation, object IoU, evaluate's option."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fmc.core.errors import FmcConfigError
from fmc.evaluation.iou import IouReference, matched_iou, n_iou
from fmc.evaluation.isotropic import isotropic, isotropic_grid, resample
from fmc.evaluation.scoring import (
    PER_IMAGE_COLUMNS,
    SUMMARY_COLUMNS,
    EvaluationResult,
    ImageScore,
    format_table,
    summarize,
    write_tables,
)
from fmc.evaluation.segmentation import CellposeSegmenter, ProxySegmenter, make_segmenter
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from tests.conftest import assert_user_error, fused_as_predictions, run_in_process

SPACING = (2.0, 0.5, 0.5)
SHAPE = (24, 48, 48)
# Sphere centres in µm (ZYX) inside a 48 × 24 × 24 µm field; the first two touch (8 µm apart).
CENTRES = [(12.0, 6.0, 6.0), (12.0, 14.0, 6.0), (30.0, 17.0, 12.0), (36.0, 6.0, 16.0)]
RADIUS = 4.0


def voxel_centres(shape, spacing):
    """Physical ZYX coordinates (µm) of the voxel centres, as open grids."""
    return [(np.arange(n) + 0.5).reshape([-1 if a == axis else 1 for a in range(3)]) * s
            for axis, (n, s) in enumerate(zip(shape, spacing, strict=True))]


def spheres(shape=SHAPE, spacing=SPACING, centres=CENTRES, radius=RADIUS) -> np.ndarray:
    """Bright spheres with soft edges on a dim background (float32, no noise)."""
    z, y, x = voxel_centres(shape, spacing)
    volume = np.full(shape, 100.0, np.float32)
    for cz, cy, cx in centres:
        distance = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
        volume += 1000.0 / (1.0 + np.exp((distance - radius) / 0.4))
    return volume


def sphere_labels(shape, spacing, centres=CENTRES, radius=RADIUS) -> np.ndarray:
    z, y, x = voxel_centres(shape, spacing)
    labels = np.zeros(shape, np.int32)
    for index, (cz, cy, cx) in enumerate(centres, start=1):
        inside = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2
        labels[inside & (labels == 0)] = index
    return labels


def degraded(volume: np.ndarray, seed: int = 0, sigma=(1.0, 1.5, 1.5), noise=60.0) -> np.ndarray:
    """A single-view-like copy: blurred (more along z) and noisy."""
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(volume, sigma) + rng.normal(0, noise, volume.shape)).astype(np.float32)


def cells(seed: int = 1, shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """A membrane image of 12 Voronoi cells in an ellipsoid, and its labels on the isotropic grid.

    Drawn on a 0.5 µm grid, blurred by an axial PSF and averaged onto ``spacing``, as a light
    sheet records it (membranes across z come out dimmer than those along it).
    """
    rng = np.random.default_rng(seed)
    field = np.array(shape) * spacing
    # A 3 × 2 × 2 grid of cell centres over the field, jittered.
    seeds = np.array([(a, b, c) for a in (0.29, 0.54, 0.79) for b in (0.29, 0.71)
                      for c in (0.29, 0.71)]) * field
    seeds += rng.uniform(-1.5, 1.5, seeds.shape) * field.max() / 48
    factor = round(spacing[0] / spacing[1])
    fine_shape = (shape[0] * factor, shape[1], shape[2])
    z, y, x = voxel_centres(fine_shape, (spacing[1],) * 3)
    distance = np.sqrt((z[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
                       + (x[..., None] - seeds[:, 2]) ** 2)
    nearest = np.sort(distance, axis=-1)
    centre = np.array(fine_shape) * spacing[1] / 2
    specimen = (((z - centre[0]) / (centre[0] - 2)) ** 2 + ((y - centre[1]) / (centre[1] - 2)) ** 2
                + ((x - centre[2]) / (centre[2] - 2)) ** 2) <= 1
    outline = specimen & ~ndimage.binary_erosion(specimen)
    bright = (specimen & (nearest[..., 1] - nearest[..., 0] < 0.6)) | outline
    fine = ndimage.gaussian_filter(100 + 1000 * bright.astype(np.float32), (3, 0.6, 0.6))
    volume = fine.reshape(shape[0], factor, *shape[1:]).mean(axis=1)
    volume += np.random.default_rng(seed + 1).normal(0, 20, shape)
    return volume.astype(np.float32), np.where(specimen, np.argmin(distance, axis=-1) + 1, 0)


# ----------------------------------------------------------------------------------------------
# Isotropic resampling
# ----------------------------------------------------------------------------------------------
def test_isotropic_grid_uses_the_finest_spacing_and_the_voxel_cap():
    assert isotropic_grid(SHAPE, SPACING) == ((96, 48, 48), 0.5)
    shape, step = isotropic_grid((100, 1000, 1000), (2.0, 0.2, 0.2), max_voxels=1_000_000)
    assert np.prod(shape) <= 1_000_000 and step > 0.2
    # Same field of view, isotropic voxels: every axis spans about the same µm as the source.
    assert np.allclose(np.array(shape) * step, [200, 200, 200], rtol=0.02)


def test_isotropic_interpolates_linearly_along_z():
    ramp = np.broadcast_to(np.arange(24, dtype=np.float32)[:, None, None], (24, 5, 5))
    result = isotropic(ramp, (2.0, 1.0, 1.0))
    assert result.shape == (48, 5, 5)
    # Centre-aligned voxels: plane j of the fine grid sits at source index (j + 0.5) / 2 - 0.5.
    expected = np.clip((np.arange(48) + 0.5) / 2 - 0.5, 0, 23)
    assert np.allclose(result[:, 2, 2], expected)


def test_voxel_cap_averages_blocks():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(10, 64, 64)).astype(np.float32)
    result = isotropic(volume, (1.0, 0.5, 0.5), max_voxels=10 * 32 * 32)
    assert result.shape == (10, 32, 32)
    assert np.allclose(result, volume.reshape(10, 32, 2, 32, 2).mean(axis=(2, 4)), atol=1e-5)


def test_resampling_reads_the_source_in_chunks():
    class Recorder:
        """A volume read in z-slabs that remembers how many planes each read asked for."""

        def __init__(self, array):
            self.array, self.shape, self.reads = array, array.shape, []

        def __getitem__(self, key):
            self.reads.append(key.stop - key.start)
            return self.array[key]

    volume = spheres()
    recorder = Recorder(volume)
    assert np.array_equal(resample(recorder, (96, 48, 48)), resample(volume, (96, 48, 48)))
    assert len(recorder.reads) > 1 and max(recorder.reads) < SHAPE[0]


# ----------------------------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------------------------
def test_matched_iou_definition():
    a = np.zeros((1, 4, 10), np.int32)
    a[0, :, 0:4] = 1
    a[0, :, 6:10] = 2
    assert matched_iou(a, a) == 1.0
    assert matched_iou(a, np.where(a > 0, 3 - a, 0) * 7) == 1.0  # label values do not matter
    assert matched_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert matched_iou(a, np.zeros_like(a)) == 0.0
    # Object 2 shifted by one column: IoU 3/5; object 1 exact; (1 + 0.6) / 2 objects.
    b = a.copy()
    b[0, :, 6] = 0
    b[0, :, 5] = 2
    b[0, :, 6:9] = 2
    b[0, :, 9] = 0
    assert matched_iou(a, b) == pytest.approx((1 + 0.6) / 2)
    assert matched_iou(b, a) == pytest.approx(matched_iou(a, b))
    # Both objects merged into one: each IoU <= 1/2, no match; 3 objects, none matched.
    merged = np.where(a > 0, 1, 0)
    merged[0, :, 4:6] = 1
    assert matched_iou(a, merged) == 0.0
    # A spurious extra object lowers the score: 2 matched of 3 objects.
    extra = a.copy()
    extra[0, 0, 5] = 9
    assert matched_iou(a, extra) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------
# Proxy segmentation and N_IoU
# ----------------------------------------------------------------------------------------------
def test_proxy_finds_each_sphere_after_isotropic_resampling():
    volume = isotropic(spheres(), SPACING)
    proxy = ProxySegmenter()
    diameter = proxy.estimate_diameter(volume, "nucleus")
    assert diameter == pytest.approx(2 * RADIUS / 0.5, rel=0.25)  # 16 isotropic voxels
    labels = proxy.segment(volume, "nucleus", diameter)
    assert labels.max() == len(CENTRES)  # the two touching spheres are split
    truth = sphere_labels(volume.shape, (0.5, 0.5, 0.5))
    assert matched_iou(labels, truth) > 0.8
    assert matched_iou(labels, labels) == 1.0


def test_proxy_finds_the_cells_of_a_membrane_image():
    volume, truth = cells()
    volume = isotropic(volume, SPACING)
    proxy = ProxySegmenter()
    labels = proxy.segment(volume, "membrane", proxy.estimate_diameter(volume, "membrane"))
    assert abs(int(labels.max()) - 12) <= 2
    assert matched_iou(labels, truth) > 0.6


@pytest.mark.parametrize("content", ["nucleus", "membrane"])
def test_n_iou_is_one_for_the_ground_truth_and_zero_for_the_input(content: str):
    target = spheres() if content == "nucleus" else cells()[0]
    view = degraded(target)
    perfect = n_iou(target, target, view, SPACING, content, "proxy")
    assert perfect.backend == "proxy"
    assert perfect.iou_pred == 1.0 and perfect.n_iou == 1.0
    assert 0.0 <= perfect.iou_input < 1.0
    unchanged = n_iou(view, target, view, SPACING, content, "proxy")
    assert unchanged.n_iou == 0.0 and unchanged.iou_pred == unchanged.iou_input


def test_a_blurred_noisy_input_scores_lower_than_a_clean_one():
    target = spheres()
    reference = IouReference(target, degraded(target), SPACING, "nucleus", "proxy")
    clean = reference.score(target + np.random.default_rng(5).normal(0, 10, SHAPE))
    heavy = reference.score(degraded(target, seed=6, sigma=(1.5, 2.5, 2.5), noise=150.0))
    assert clean.iou_pred > heavy.iou_pred
    assert clean.n_iou > heavy.n_iou


def test_cellpose_backend_without_cellpose_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cellpose", None)  # import cellpose now raises ImportError
    with pytest.raises(FmcConfigError, match="cellpose is not installed"):
        make_segmenter("cellpose")
    with pytest.raises(FmcConfigError, match="choose proxy or cellpose"):
        make_segmenter("stardist")


def fake_cellpose(monkeypatch: pytest.MonkeyPatch, load_error: Exception | None = None) -> list:
    """Install a stand-in ``cellpose`` with the cellpose 3 calls fmc makes; returns its call log.

    The real package is not installed here; the stand-in checks the wiring (model names, 3D
    call, diameter from the size model) and segments with the proxy.
    """
    calls = []

    class SizeModel:
        def eval(self, planes, channels):
            calls.append(("size", len(planes), channels))
            return np.full(len(planes), 16.0), None

    class Cellpose:
        diam_mean = 30.0

        def __init__(self, gpu, model_type):
            if load_error is not None:
                raise load_error
            calls.append(("load", model_type, gpu))
            self.model_type, self.sz = model_type, SizeModel()

        def eval(self, volume, channels, diameter, do_3D, z_axis):
            calls.append(("eval", self.model_type, diameter, do_3D, z_axis))
            content = "nucleus" if self.model_type == "nuclei" else "membrane"
            return ProxySegmenter().segment(volume, content, diameter), None, None, diameter

    models = types.ModuleType("cellpose.models")
    models.Cellpose = Cellpose
    package = types.ModuleType("cellpose")
    package.models = models
    monkeypatch.setitem(sys.modules, "cellpose", package)
    monkeypatch.setitem(sys.modules, "cellpose.models", models)
    return calls


def test_cellpose_backend_runs_the_models_in_3d_with_the_gt_diameter(monkeypatch: pytest.MonkeyPatch):
    calls = fake_cellpose(monkeypatch)
    target = spheres()
    score = n_iou(target, target, degraded(target), SPACING, "nucleus", CellposeSegmenter(gpu=False))
    assert score.backend == "cellpose" and score.n_iou == 1.0
    assert calls[0] == ("load", "nuclei", False)
    assert calls[1] == ("size", 3, [0, 0])  # three central planes of the isotropic GT
    assert all(call[1:] == ("nuclei", 16.0, True, 0) for call in calls[2:])
    assert len(calls) == 5  # GT, input, prediction: three 3D segmentations


def test_cellpose_without_weights_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    fake_cellpose(monkeypatch, load_error=OSError("could not download cyto3"))
    target = cells()[0]
    with pytest.raises(FmcConfigError, match="could not load the cellpose model 'cyto3'"):
        n_iou(target, target, degraded(target), SPACING, "membrane", CellposeSegmenter(gpu=False))


# ----------------------------------------------------------------------------------------------
# Tables and evaluate's option
# ----------------------------------------------------------------------------------------------
def test_tables_keep_their_columns_without_iou(tmp_path: Path):
    rows = [ImageScore("a.tif", 1, "nucleus", 0.5, 0.7, 0.4, 30.0, "prediction")]
    result = EvaluationResult(rows=rows, summary=summarize(rows))
    per_image, summary = write_tables(tmp_path, result)
    assert per_image.read_text().splitlines()[0] == ",".join(PER_IMAGE_COLUMNS)
    assert summary.read_text().splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    assert "IoU" not in format_table(result.summary)


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def scene_folder(tmp_path: Path) -> Path:
    """One nucleus and one membrane pair (clean fused, degraded angle) with 2×0.5×0.5 µm voxels."""
    folder = tmp_path / "raw"
    shape = (16, 32, 32)
    nuclei = spheres(shape, SPACING, [(8.0, 6.0, 6.0), (8.0, 14.0, 6.0), (22.0, 10.0, 10.0)])
    membrane = cells(shape=shape)[0]
    for index, (content, fused) in enumerate([("nucleus", nuclei), ("membrane", membrane)]):
        meta = VolumeMeta(study=2, content=content, spacing_zyx=SPACING)
        write_volume(folder / f"image_{index}_{content}_fused.tif", fused.astype(np.uint16), meta)
        write_volume(folder / f"image_{index}_{content}_angle.tif",
                     degraded(fused, seed=index).clip(0, 65535).astype(np.uint16), meta)
    return folder


def test_evaluate_with_the_proxy_writes_proxy_columns(scene_folder: Path, tmp_path: Path):
    predictions = fused_as_predictions(scene_folder, tmp_path / "pred")
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={scene_folder}", f"prediction={predictions}",
                            "baseline=identity", "iou=proxy", f"output={out}", "progress=false")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "per_image.csv")
    assert list(rows[0]) == [*PER_IMAGE_COLUMNS, "iou_input_proxy", "iou_pred_proxy", "n_iou_proxy"]
    by_method = {(r["file"], r["method"]): r for r in rows}
    for name in ("image_0_nucleus_angle.tif", "image_1_membrane_angle.tif"):
        assert float(by_method[(name, "prediction")]["n_iou_proxy"]) == 1.0
        assert float(by_method[(name, "identity")]["n_iou_proxy"]) == 0.0
        assert float(by_method[(name, "identity")]["iou_pred_proxy"]) < 1.0
    summary = read_csv(out / "summary.csv")
    assert list(summary[0])[-3:] == ["mean_n_iou_proxy", "mean_iou_input_proxy",
                                     "mean_iou_pred_proxy"]
    assert not any("n_iou" == column for column in [*rows[0], *summary[0]])
    assert "N_IoU(proxy)" in result.stdout and "NOT the challenge's N_IoU" in result.stdout
    settings = json.loads((out / "evaluate.json").read_text())
    assert settings["config"]["iou"] == "proxy" and "not the challenge's" in settings["iou_metric"]


@pytest.mark.parametrize("case", ["cellpose_missing", "unknown_backend", "bad_cap"])
def test_evaluate_iou_user_errors(scene_folder: Path, tmp_path: Path, case: str,
                                  monkeypatch: pytest.MonkeyPatch):
    if case == "cellpose_missing":
        # A 'cellpose' that fails to import stands in for an environment without it, whether or
        # not the real one is installed.
        monkeypatch.setitem(sys.modules, "cellpose", None)  # import cellpose now raises ImportError
        result = run_in_process("fmc.evaluate", f"input={scene_folder}", "baseline=identity",
                                "iou=cellpose", f"output={tmp_path / 'out'}")
        assert_user_error(result, "iou=cellpose", "cellpose is not installed")
    elif case == "unknown_backend":
        result = run_in_process("fmc.evaluate", f"input={scene_folder}", "baseline=identity",
                                "iou=stardist", f"output={tmp_path / 'out'}")
        assert_user_error(result, "iou=stardist", "choose none, proxy or cellpose")
    else:
        result = run_in_process("fmc.evaluate", f"input={scene_folder}", "baseline=identity",
                                "iou=proxy", "iou_max_voxels=-5", f"output={tmp_path / 'out'}")
        assert_user_error(result, "iou_max_voxels=-5")
    assert not (tmp_path / "out" / "per_image.csv").exists()
