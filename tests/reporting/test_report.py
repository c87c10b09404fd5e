"""``python -m fmc.report``: the sweep table, its files and figures, from a hand-made sweep folder.

The sweep's runs carry metrics.json and test_scores/summary.csv files written here, so no
training or prediction runs (except in the one test marked slow). The command's ``main`` runs
in-process (``run_in_process``); one call runs the real command line for its exit-2 contract.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmc.evaluation.montage import MontageImage, image_panels, montage_array, panel_shapes
from fmc.evaluation.scoring import SUMMARY_COLUMNS
from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from fmc.reporting.evaluate_runs import evaluation_commands, hydra_override
from fmc.reporting.report import inspect_run
from fmc.reporting.runs import read_test_scores
from tests.conftest import assert_user_error, run_command, run_in_process, save_tiny_checkpoint

SPACING = (3.0, 0.5, 0.5)  # a 6x coarser z step, as in light-sheet stacks
SHAPE = (8, 16, 16)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tiny_volume(seed: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 100.0, shape).astype(np.uint16)


def write_summary(folder: Path, rows: list[tuple]) -> None:
    """A summary.csv as fmc.evaluate writes it; rows are (content, study, method, n, mean)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for content, study, method, n, mean in rows:
            writer.writerow({"content": content, "study": study, "method": method, "n_images": n,
                             "n_scored": n, "n_missing": 0, "mean_n_ssim": f"{mean:.6f}",
                             "mean_ssim_input": "0.5", "mean_ssim_pred": "0.6",
                             "mean_psnr_pred": "30.0"})


def write_run(run: Path, metrics: dict | None, summary: list[tuple] | None = None,
              image: str | None = None, prediction: np.ndarray | None = None) -> Path:
    run.mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    if metrics is not None:
        (run / "checkpoints" / Path(metrics["best/checkpoint"]).name).write_bytes(b"")
        (run / "metrics.json").write_text(json.dumps(metrics))
    if summary is not None:
        write_summary(run / "test_scores", summary)
        (run / "test_scores" / "per_image.csv").write_text(
            f"file,study,content,n_ssim,method,status\n{image},3,nucleus,0.3,prediction,ok\n")
    if prediction is not None:
        write_volume(run / "test_predictions" / image, prediction,
                     VolumeMeta(spacing_zyx=SPACING))
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> dict:
    """Raw pairs and a sweep: two finished, scored runs and one without metrics.json."""
    raw = tmp_path / "raw"
    meta = VolumeMeta(study=3, content="nucleus", spacing_zyx=SPACING)
    for index, content in enumerate(("nucleus", "membrane")):
        write_volume(raw / f"image_{index}_{content}_angle.tif", tiny_volume(index), meta)
        write_volume(raw / f"image_{index}_{content}_fused.tif", tiny_volume(index + 10), meta)
    folder = tmp_path / "multirun"
    write_run(folder / "0", {
        "run_name": "study3_nucleus_raw_distance_ssim_l1", "study": 3, "content": "nucleus",
        "channels": "raw_distance", "loss": "ssim_l1", "best/val_n_ssim": 0.1234,
        # Recorded relative to where training ran: found by name in the run's checkpoints/.
        "best/checkpoint": "outputs/train/multirun/x/0/checkpoints/epoch0003-step40-nssim0.1234.ckpt",
        "final/val_n_ssim": 0.11, "global_step": 40, "epochs": 4,
        "last_checkpoint": "outputs/train/multirun/x/0/checkpoints/last.ckpt",
    }, summary=[("nucleus", "all", "prediction", 2, 0.3), ("nucleus", "3", "prediction", 2, 0.9),
                ("nucleus", "all", "identity", 2, 0.0),
                ("nucleus", "all", "gaussian(sigma=0.5)", 2, 0.1),
                ("nucleus", "all", "gaussian(sigma=1)", 2, 0.15)],
        image="image_0_nucleus_angle.tif", prediction=tiny_volume(20).astype(np.float32))
    write_run(folder / "1", {
        "run_name": "study1_membrane_raw_l1", "study": 1, "content": "membrane",
        "channels": "raw", "loss": "l1", "best/val_n_ssim": 0.05,
        "best/checkpoint": "/nowhere/epoch0001-step10-nssim0.0500.ckpt", "global_step": 10,
        "epochs": 2,
    }, summary=[("membrane", "all", "prediction", 1, -0.02),
                ("membrane", "all", "identity", 1, 0.0),
                ("membrane", "all", "gaussian(sigma=[0.2,0.5,0.5])", 1, 0.04)],
        image="image_1_membrane_angle.tif", prediction=tiny_volume(21).astype(np.float32))
    incomplete = write_run(folder / "2", None)
    (incomplete / ".hydra").mkdir()
    (incomplete / ".hydra" / "config.yaml").write_text(
        "study: 2\ncontent: nucleus\nchannels:\n  name: raw\nloss:\n  name: l1\n"
        "run_name: study${study}_${content}_${channels.name}_${loss.name}\n")
    return {"raw": raw, "sweep": folder}


def test_report_table_files_and_figures(sweep: dict):
    folder = sweep["sweep"]
    result = run_in_process("fmc.report", f"sweep={folder}", f"input={sweep['raw']}",
                            "evaluate_missing=false", "montage_panel_px=64")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["run"]: r for r in read_csv(folder / "report.csv")}
    assert list(rows) == ["0", "1", "2"]
    first = rows["0"]
    assert (first["study"], first["content"], first["channels"], first["loss"]) == \
        ("3", "nucleus", "raw_distance", "ssim_l1")
    assert float(first["val_n_ssim"]) == pytest.approx(0.1234)
    assert float(first["test_n_ssim"]) == pytest.approx(0.3)  # the all-studies row, not study 3's
    assert float(first["identity_n_ssim"]) == 0.0
    assert float(first["gaussian_n_ssim"]) == pytest.approx(0.15)
    assert first["gaussian_sigma"] == "1"
    assert float(first["model_minus_gaussian"]) == pytest.approx(0.15)
    assert first["n_test"] == "2" and first["status"] == "ok"
    assert first["checkpoint"] == str(folder / "0" / "checkpoints" /
                                      "epoch0003-step40-nssim0.1234.ckpt")
    second = rows["1"]
    assert float(second["test_n_ssim"]) == pytest.approx(-0.02)
    assert second["gaussian_sigma"] == "[0.2,0.5,0.5]" and second["n_test"] == "1"
    # Printed and in Markdown too.
    for text in (result.stdout, (folder / "report.md").read_text()):
        assert "+0.3000" in text and "+0.1500 (1)" in text and "-0.0200" in text
        assert "epoch0003-step40-nssim0.1234.ckpt" in text
    assert "![report_nssim](report_nssim.png)" in (folder / "report.md").read_text()
    from PIL import Image

    for name in ("report_nssim.png", "report_montage.png"):
        path = folder / name
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            image.load()
            assert image.width > 100 and image.height > 100
    with Image.open(folder / "report_montage.png") as montage:
        # Header and gap, then per run: label, XY row (64 px), label, XZ row (8 planes x 6 x 4
        # px: 8 z-planes of 3 um beside 16 x-voxels of 0.5 um drawn 64 px wide), gap.
        assert montage.width == 4 * 64 + 3 * 6
        assert montage.height == 18 + 6 + 2 * (18 + 64 + 18 + 192 + 12)


def test_a_run_without_metrics_is_listed_as_incomplete(sweep: dict):
    folder = sweep["sweep"]
    result = run_in_process("fmc.report", f"sweep={folder}", f"input={sweep['raw']}",
                            "evaluate_missing=false", "montage=false")
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(r for r in read_csv(folder / "report.csv") if r["run"] == "2")
    assert row["status"].startswith("incomplete: no metrics.json")
    # What it was training comes from its Hydra config.
    assert (row["study"], row["content"], row["run_name"]) == ("2", "nucleus", "study2_nucleus_raw_l1")
    assert row["test_n_ssim"] == "" and row["val_n_ssim"] == ""
    assert "1 incomplete run(s)" in result.stdout
    assert not (folder / "report_montage.png").exists()


def test_runs_list_and_unscored_run(sweep: dict, tmp_path: Path):
    folder = sweep["sweep"]
    unscored = write_run(tmp_path / "other" / "run", {
        "run_name": "x", "study": 1, "content": "nucleus", "channels": "raw", "loss": "l1",
        "best/val_n_ssim": 0.2, "best/checkpoint": "epoch0000-step1-nssim0.2000.ckpt"})
    out = tmp_path / "report"
    result = run_in_process("fmc.report", f"runs=[{folder / '1'},{unscored}]", f"output={out}",
                            "evaluate_missing=false", "montage=false")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out / "report.csv")
    assert [r["run"] for r in rows] == ["1", "run"]
    assert rows[1]["status"].startswith("not evaluated")
    assert rows[1]["checkpoint"].endswith("epoch0000-step1-nssim0.2000.ckpt")
    assert (out / "report_nssim.png").stat().st_size > 0


def test_missing_sweep_folder_is_a_user_error(tmp_path: Path):
    # The real command line: the exit-2 contract (one line, no traceback) of fmc.report.
    result = run_command("fmc.report", f"sweep={tmp_path / 'nope'}")
    assert_user_error(result, "sweep=", "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run_in_process("fmc.report", f"sweep={empty}"), "no run folder")
    assert_user_error(run_in_process("fmc.report"), "give sweep=DIR")
    assert_user_error(run_in_process("fmc.report", f"runs=[{empty}]"), "output=DIR is needed")


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------
def test_xz_panel_height_follows_the_z_to_x_spacing_ratio(tmp_path: Path):
    assert panel_shapes((8, 16, 16), (3.0, 0.5, 0.5), 16) == ((16, 16), (48, 16))
    assert panel_shapes((8, 16, 16), (0.5, 0.5, 0.5), 16) == ((16, 16), (8, 16))
    assert panel_shapes((8, 16, 32), (2.0, 1.0, 0.5), 64) == ((64, 64), (64, 64))
    heights = {}
    for z_um in (0.5, 3.0):
        meta = VolumeMeta(spacing_zyx=(z_um, 0.5, 0.5))
        paths = []
        for name, seed in (("in", 1), ("pred", 2), ("target", 3)):
            paths.append(write_volume(tmp_path / f"{z_um}" / f"{name}.tif", tiny_volume(seed), meta))
        xy_row, xz_row, spacing = image_panels(MontageImage("x", *paths), panel_px=32)
        assert spacing == (z_um, 0.5, 0.5)
        assert [p.shape for p in xy_row] == [(32, 32, 3)] * 4
        heights[z_um] = xz_row[0].shape[0]
        assert montage_array([MontageImage("x", *paths)], panel_px=32).shape[1] == 4 * 32 + 18
    assert heights == {0.5: 16, 3.0: 96}


def test_difference_panel_is_zero_for_a_perfect_prediction(tmp_path: Path):
    meta = VolumeMeta(spacing_zyx=(1.0, 1.0, 1.0))
    target = write_volume(tmp_path / "t.tif", tiny_volume(3), meta)
    view = write_volume(tmp_path / "v.tif", tiny_volume(4), meta)
    # Another scale of the same volume normalises to the same intensities.
    prediction = write_volume(tmp_path / "p.tif", tiny_volume(3).astype(np.float32) * 2 + 5, meta)
    xy_row, xz_row, _ = image_panels(MontageImage("x", view, prediction, target), panel_px=16)
    assert xy_row[3].max() == 0 and xz_row[3].max() == 0
    np.testing.assert_array_equal(xy_row[1], xy_row[2])


def test_summary_reading_picks_the_best_gaussian(tmp_path: Path):
    write_summary(tmp_path, [("nucleus", "all", "prediction", 3, 0.2),
                             ("membrane", "all", "prediction", 1, 0.9),
                             ("nucleus", "all", "gaussian(sigma=0.25)", 3, 0.05),
                             ("nucleus", "all", "gaussian(sigma=2)", 3, -0.1)])
    scores = read_test_scores(tmp_path, "nucleus")
    assert (scores.model, scores.gaussian, scores.gaussian_sigma, scores.n_images) == \
        (pytest.approx(0.2), pytest.approx(0.05), "0.25", 3)
    # Content unknown: every content, weighted by scored images.
    assert read_test_scores(tmp_path).model == pytest.approx((0.2 * 3 + 0.9) / 4)
    assert np.isnan(scores.identity)
    assert read_test_scores(tmp_path / "nothing") is None


def test_a_run_that_cannot_be_evaluated_says_why(tmp_path: Path):
    run = write_run(tmp_path / "0", {"study": 1, "content": "nucleus", "best/val_n_ssim": 0.2,
                                     "best/checkpoint": "epoch0000-step1-nssim0.2000.ckpt"})
    report = inspect_run(run, "0", evaluate_missing=True)  # no .hydra/config.yaml: no test list
    assert report.status.startswith("not evaluated: no .hydra/config.yaml")
    assert report.scores is None and report.row()["n_test"] == ""
    (run / "metrics.json").write_text("{not json")
    assert inspect_run(run, "0").status.startswith("incomplete: ")


def test_evaluation_command_lines(tmp_path: Path):
    run = tmp_path / "sweep dir" / "0"
    predict, evaluate = evaluation_commands(run, run / "checkpoints" / "best.ckpt",
                                            tmp_path / "lists" / "study1_nucleus_test.csv", None)
    assert predict[1:3] == ["-m", "fmc.predict"]
    assert f"ckpt='{run / 'checkpoints' / 'best.ckpt'}'" in predict  # a space: quoted for Hydra
    assert f"input={tmp_path / 'lists' / 'study1_nucleus_test.csv'}" in predict
    assert "progress=false" in predict
    assert evaluate[1:3] == ["-m", "fmc.evaluate"]
    assert "baseline=[identity,gaussian]" in evaluate and "sigma=sweep" in evaluate
    assert not any(arg.startswith("input=") for arg in evaluate)  # evaluate's own default
    assert f"output='{run / 'test_scores'}'" in evaluate
    assert hydra_override("a", "it's, odd") == "a='it\\'s, odd'"


@pytest.mark.slow
def test_evaluate_missing_runs_predict_and_evaluate(raw_folder: Path, tmp_path: Path):
    """The real commands on a run whose split list names raw TIFFs (no H5 needed)."""
    run = tmp_path / "sweep" / "0"
    lists = raw_folder / "lists"
    lists.mkdir()
    (lists / "test.csv").write_text("image_0_nucleus_angle.tif;image_0_nucleus_fused.tif\n"
                                    "image_2_nucleus_angle.tif;image_2_nucleus_fused.tif\n")
    checkpoint = save_tiny_checkpoint(run / "checkpoints" / "epoch0000-step1-nssim0.0100.ckpt")
    (run / "metrics.json").write_text(json.dumps({
        "run_name": "r", "study": "all", "content": "nucleus", "channels": "raw", "loss": "l1",
        "best/val_n_ssim": 0.01, "best/checkpoint": str(checkpoint)}))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        f"study: all\ncontent: nucleus\ndata:\n  root: {raw_folder}\n  test_list: test.csv\n")
    result = run_in_process("fmc.report", f"sweep={run.parent}", f"input={raw_folder}",
                            "montage_panel_px=32")
    assert result.returncode == 0, result.stderr[-3000:]
    row = read_csv(run.parent / "report.csv")[0]
    assert row["status"] == "ok" and row["n_test"] == "2"
    # An untrained residual model is the identity: N_SSIM about 0.
    assert abs(float(row["test_n_ssim"])) < 0.05
    assert row["gaussian_sigma"] != ""
    assert sorted(p.name for p in (run / "test_predictions").glob("*.tif")) == \
        ["image_0_nucleus_angle.tif", "image_2_nucleus_angle.tif"]
    assert (run / "test_scores" / "report_evaluation.json").is_file()
    assert (run.parent / "report_montage.png").stat().st_size > 0
    # Scores gone, predictions of the same checkpoint still there: only evaluate runs again.
    shutil.rmtree(run / "test_scores")
    again = run_in_process("fmc.report", f"sweep={run.parent}", f"input={raw_folder}", "montage=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the predictions" in again.stdout + again.stderr
    assert read_csv(run.parent / "report.csv")[0]["test_n_ssim"] == row["test_n_ssim"]
