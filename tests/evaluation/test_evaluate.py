"""``python -m fmc.evaluate``: tables, baselines, and bad inputs.

The command's ``main`` runs in-process (``run_in_process``); one test runs the real command line
for its exit-2 contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import read_volume, write_volume
from tests.conftest import assert_user_error, fused_as_predictions, run_command, run_in_process


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_identity_scores_zero_and_ground_truth_scores_one(raw_folder: Path, tmp_path: Path):
    predictions = fused_as_predictions(raw_folder, tmp_path / "pred")
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", f"prediction={predictions}",
                            f"output={out}", "baseline=identity", "progress=false")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "per_image.csv")
    assert list(rows[0])[:7] == ["file", "study", "content", "ssim_input", "ssim_pred", "n_ssim",
                                 "psnr_pred"]
    by_method = {(r["file"], r["method"]): r for r in rows}
    assert len(rows) == 6
    for name in ("image_0_nucleus_angle.tif", "image_1_membrane_angle.tif",
                 "image_2_nucleus_angle.tif"):
        assert float(by_method[(name, "identity")]["n_ssim"]) == 0.0
        assert float(by_method[(name, "prediction")]["n_ssim"]) == 1.0
    summary = read_csv(out / "summary.csv")
    leaderboard = {(r["content"], r["method"]): r for r in summary if r["study"] == "all"}
    assert float(leaderboard[("nucleus", "prediction")]["mean_n_ssim"]) == 1.0
    assert leaderboard[("nucleus", "prediction")]["n_images"] == "2"
    per_study = {(r["content"], r["study"]) for r in summary if r["method"] == "prediction"}
    assert {("nucleus", "1"), ("nucleus", "3"), ("membrane", "1")} <= per_study
    assert "N_SSIM" in result.stdout and "nucleus" in result.stdout


def test_gaussian_sweep_reports_best_sigma(raw_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", f"output={out}", "baseline=gaussian",
                            "sigma=sweep", "sigma_sweep=[0.3,0.6]", "progress=false")
    assert result.returncode == 0, result.stderr
    methods = {r["method"] for r in read_csv(out / "per_image.csv")}
    assert methods == {"gaussian(sigma=0.3)", "gaussian(sigma=0.6)"}
    assert "best per content" in result.stdout


def test_anisotropic_sigma(raw_folder: Path, tmp_path: Path):
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", f"output={tmp_path / 'o'}",
                            "baseline=gaussian", "sigma=[0.2,0.5,0.5]", "progress=false")
    assert result.returncode == 0, result.stderr
    assert "gaussian(sigma=[0.2,0.5,0.5])" in result.stdout


def test_missing_prediction_is_listed_not_dropped(raw_folder: Path, tmp_path: Path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    view, meta = read_volume(raw_folder / "image_0_nucleus_angle.tif")
    write_volume(predictions / "image_0_nucleus_angle.tif", view.astype(np.float32), meta)
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", f"prediction={predictions}",
                            f"output={out}", "progress=false")
    assert result.returncode == 0, result.stderr
    status = {r["file"]: r["status"] for r in read_csv(out / "per_image.csv")}
    assert status == {"image_0_nucleus_angle.tif": "ok", "image_1_membrane_angle.tif": "missing",
                      "image_2_nucleus_angle.tif": "missing"}
    nucleus = next(r for r in read_csv(out / "summary.csv")
                   if r["content"] == "nucleus" and r["study"] == "all")
    assert (nucleus["n_images"], nucleus["n_scored"], nucleus["n_missing"]) == ("2", "1", "1")
    assert "missing" in result.stdout + result.stderr


def test_shape_mismatch_names_both_shapes(raw_folder: Path, tmp_path: Path):
    predictions = tmp_path / "pred"
    write_volume(predictions / "image_0_nucleus_angle.tif", np.zeros((16, 32, 30), np.float32),
                 VolumeMeta())
    out = tmp_path / "out"
    # The real command line: the exit-2 contract (one line, no traceback) of fmc.evaluate.
    result = run_command("fmc.evaluate", f"input={raw_folder}", f"prediction={predictions}", f"output={out}")
    assert_user_error(result, "(16, 32, 30)", "(16, 32, 32)", "image_0_nucleus_angle.tif")
    assert not (out / "per_image.csv").exists()


@pytest.mark.parametrize("case", ["missing_raw", "empty_raw", "no_method", "bad_baseline",
                                  "bad_sigma", "text_as_tif", "truncated", "missing_pred_dir"])
def test_bad_inputs_exit_2_with_a_message(raw_folder: Path, tmp_path: Path, case: str):
    out = tmp_path / "out"
    args = [f"input={raw_folder}", f"output={out}", "baseline=identity"]
    expected = ""
    if case == "missing_raw":
        args[0], expected = f"input={tmp_path / 'nope'}", "raw folder does not exist"
    elif case == "empty_raw":
        (tmp_path / "empty").mkdir()
        args[0], expected = f"input={tmp_path / 'empty'}", "no image_<i>_<content>_angle.tif"
    elif case == "no_method":
        args, expected = args[:2], "nothing to score"
    elif case == "bad_baseline":
        args[2], expected = "baseline=median", "choose identity, gaussian"
    elif case == "bad_sigma":
        args += ["baseline=gaussian", "sigma=-1"]
        args.pop(2)
        expected = "sigma=-1"
    elif case == "text_as_tif":
        (raw_folder / "image_0_nucleus_fused.tif").write_text("hello")
        expected = "image_0_nucleus_fused.tif: not a readable TIFF"
    elif case == "truncated":
        path = raw_folder / "image_1_membrane_angle.tif"
        path.write_bytes(path.read_bytes()[:3000])
        expected = "image_1_membrane_angle.tif"
    elif case == "missing_pred_dir":
        args.append(f"prediction={tmp_path / 'nopred'}")
        expected = "prediction folder does not exist"
    result = run_in_process("fmc.evaluate", *args)
    assert_user_error(result, expected)
    assert not (out / "per_image.csv").exists() and not (out / "summary.csv").exists()


def test_nan_prediction_is_refused(raw_folder: Path, tmp_path: Path):
    predictions = tmp_path / "pred"
    broken = np.ones((16, 32, 32), np.float32)
    broken[2, 3, 4] = np.nan
    write_volume(predictions / "image_0_nucleus_angle.tif", broken, VolumeMeta())
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", f"prediction={predictions}",
                            f"output={tmp_path / 'out'}")
    assert_user_error(result, "NaN or infinite")


def test_without_raw_the_default_dataset_is_synthesized_once(tmp_path: Path):
    # Its own FMC_DATA (the session's may hold the dataset already), away from the cwd.
    store = {"FMC_DATA": str(tmp_path / "store")}
    result = run_in_process("fmc.evaluate", "baseline=identity", "output=scores", "progress=false",
                            "table=content", cwd=tmp_path, env=store)
    assert result.returncode == 0, result.stderr
    assert "synthesizing the default dataset" in result.stdout + result.stderr
    assert str(tmp_path / "store" / "synthetic") in result.stdout  # logged, absolute
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores", "store"]
    pairs = sorted((tmp_path / "store" / "synthetic").glob("*_angle.tif"))
    assert len(pairs) == 40
    rows = read_csv(tmp_path / "scores" / "per_image.csv")
    assert {(r["study"], r["content"]) for r in rows} == {
        (str(s), c) for s in range(1, 6) for c in ("nucleus", "membrane")}
    assert all(float(r["n_ssim"]) == 0.0 for r in rows)
    again = run_in_process("fmc.evaluate", "baseline=identity", "output=scores2", "progress=false",
                           cwd=tmp_path, env=store)
    assert again.returncode == 0 and "synthesizing" not in again.stdout + again.stderr


def test_bad_table_choice(raw_folder: Path, tmp_path: Path):
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", "baseline=identity", "table=wide",
                            f"output={tmp_path / 'o'}")
    assert_user_error(result, "table=wide")


def test_split_list_restricts_the_scored_images(raw_folder: Path, tmp_path: Path):
    listed = tmp_path / "test.csv"
    listed.write_text("image_0_nucleus_angle.h5;image_0_nucleus_fused.h5\n"
                      "image_2_nucleus_angle.h5;image_2_nucleus_fused.h5\n")
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", "baseline=identity",
                            f"split_list={listed}", f"output={out}", "progress=false")
    assert result.returncode == 0, result.stderr
    assert [r["file"] for r in read_csv(out / "per_image.csv")] == [
        "image_0_nucleus_angle.tif", "image_2_nucleus_angle.tif"]
    listed.write_text("image_9_nucleus_angle.h5;image_9_nucleus_fused.h5\n")
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", "baseline=identity",
                            f"split_list={listed}", f"output={tmp_path / 'o2'}")
    assert_user_error(result, "image_9_nucleus_angle")


def test_several_baselines_side_by_side(raw_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_in_process("fmc.evaluate", f"input={raw_folder}", "baseline=[identity,gaussian]",
                            "sigma=0.5", f"output={out}", "progress=false")
    assert result.returncode == 0, result.stderr
    assert {r["method"] for r in read_csv(out / "per_image.csv")} == {"identity",
                                                                        "gaussian(sigma=0.5)"}
