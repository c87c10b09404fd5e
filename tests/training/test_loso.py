"""Leave one study out: holdout lists and runs, the LOSO table, confidence-aware output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fmc.core.naming import lists_prefix
from fmc.models.fallback import ChangeLimit, calibrate_change_limit, resolve_fallback
from fmc.reporting.loso import HARM_LIMIT, held_out_scores, loso_markdown, loso_rows
from tests.conftest import TINY_DATA, assert_user_error, run_in_process

TINY_TRAIN = ["logger=csv", "model=unet3d", "model.features=4", "model.depth=2",
              "data.patch_size=[16,32,32]", "data.batch_size=1", "data.epoch_steps=2",
              "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.enable_progress_bar=false",
              "trainer.num_sanity_val_steps=0"]


@pytest.fixture(scope="module")
def three_studies(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny nucleus pairs of studies 1, 2 and 4 (3 each) and their H5 folder with lists."""
    from fmc.preprocessing.conversion import convert_folder
    from fmc.preprocessing.splits import write_lists
    from fmc.simulation.synth import write_pair

    raw = tmp_path_factory.mktemp("loso_raw")
    index = 0
    for study in (1, 2, 4):
        for _ in range(3):
            write_pair(raw, study, "nucleus", index, **TINY_DATA)
            index += 1
    root = tmp_path_factory.mktemp("loso_h5")
    convert_folder(raw, root, progress=False)
    write_lists(root)
    return raw, root


def _names(path: Path) -> set[str]:
    return {line.split(";")[0] for line in path.read_text().splitlines() if line}


def test_lists_prefix_names_the_holdout():
    assert lists_prefix("all") == "all"
    assert lists_prefix(3) == "study3"
    assert lists_prefix("all", 2) == "holdout2"
    assert lists_prefix("all", None) == "all"


def test_holdout_lists_leave_the_study_out_of_training_and_test_all_of_it(three_studies):
    _, root = three_studies
    lists = root / "lists"
    train = _names(lists / "holdout2_nucleus_train.csv")
    val = _names(lists / "holdout2_nucleus_val.csv")
    test = _names(lists / "holdout2_nucleus_test.csv")
    study2 = {f"image_{i}_nucleus_angle.h5" for i in (3, 4, 5)}
    assert test == study2  # every volume of the held-out study
    assert not (train | val) & study2
    assert train == _names(lists / "study1_nucleus_train.csv") | _names(
        lists / "study4_nucleus_train.csv")
    assert val == _names(lists / "study1_nucleus_val.csv") | _names(
        lists / "study4_nucleus_val.csv")


def test_holdout_needs_study_all(three_studies, tmp_path):
    _, root = three_studies
    result = run_in_process("fmc.train", "holdout=2", "study=1", f"data.root={root}",
                            *TINY_TRAIN, run_dir=tmp_path / "run")
    assert_user_error(result, "holdout=2 with study=1", "study=all")


def test_holdout_run_with_a_confidence_head_and_a_calibrated_fallback(three_studies, tmp_path):
    """fmc.train holdout=K tests on study K; the checkpoint carries its confidence head and
    calibrated fallback, and fmc.predict applies them without extra flags."""
    raw, root = three_studies
    run_dir = tmp_path / "run"
    result = run_in_process("fmc.train", "holdout=2", "content=nucleus", f"data.root={root}",
                            "model.confidence=head", "model.fallback=calibrated", *TINY_TRAIN,
                            run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["holdout"] == 2 and metrics["run_name"].startswith("holdout2-nucleus-")
    assert set(metrics["test/volumes"]) == {f"image_{i}_nucleus_angle.h5" for i in (3, 4, 5)}
    assert metrics["fallback/change_limit"] > 0
    checkpoint = torch.load(metrics["best/checkpoint"], map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["confidence"] == "head" and hparams["fallback"] == "calibrated"
    assert hparams["change_limit"] == pytest.approx(metrics["fallback/change_limit"])
    assert resolve_fallback("auto", hparams) == "calibrated"

    # The report's leave-one-study-out table, from the run's own test scores.
    report = run_in_process("fmc.report", f"runs=[{run_dir}]", f"output={tmp_path / 'report'}",
                            "evaluate_missing=false", "montage=false")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Leave one study out" in report.stdout
    assert (tmp_path / "report" / "report_loso.png").is_file()
    assert "| nucleus | 2 | 3 |" in (tmp_path / "report" / "report.md").read_text()

    # fmc.predict applies the stored fallback (auto) without extra flags.
    view = raw / "image_3_nucleus_angle.tif"
    outputs = {}
    for choice in ("auto", "calibrated"):
        out = tmp_path / f"pred_{choice}"
        predicted = run_in_process("fmc.predict", f"ckpt={metrics['best/checkpoint']}",
                                   f"input={view}", f"output={out}", f"fallback={choice}",
                                   "progress=false")
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        from fmc.io.tiff import read_volume

        outputs[choice] = read_volume(out / view.name)[0]
    np.testing.assert_array_equal(outputs["auto"], outputs["calibrated"])


def test_confidence_head_blends_prediction_and_view():
    from fmc.models.module import FusionModule

    module = FusionModule(features=4, depth=2, residual=True, confidence="head",
                          patch_size=[8, 16, 16])
    assert module.net.out_channels == 2
    inputs = torch.rand(2, 2, 8, 16, 16)
    blended, prediction, logit = module.forward_parts(inputs)
    assert blended.shape == prediction.shape == logit.shape == (2, 1, 8, 16, 16)
    weight = torch.sigmoid(logit)
    expected = inputs[:, :1] + weight * (prediction - inputs[:, :1])
    torch.testing.assert_close(blended, expected)
    # A new residual network is the identity, with or without the head.
    torch.testing.assert_close(module(inputs), inputs[:, :1])
    batch = {"input": inputs, "target": inputs[:, :1] * 1.1}
    loss = module._shared_step(batch, "train")
    loss.backward()
    assert module.net.last_conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="confidence"):
        FusionModule(confidence="ensemble")


def test_change_limit_caps_the_local_change():
    shape = (16, 32, 32)
    view = np.zeros(shape, np.float32)
    prediction = view.copy()
    prediction[:, :, :16] = 0.1   # a change as large as the calibration saw
    prediction[:, :, 16:] = 1.0   # ten times larger: out of the network's depth
    limit = calibrate_change_limit([np.full((4, 4, 4), 0.1)])
    assert limit == pytest.approx(0.1)
    weighting = ChangeLimit(shape, limit, grid=8, sigma=0.01)
    weighting.add(0, view, prediction)
    weighting.finish()
    blended = weighting.blend(0, view, prediction)
    np.testing.assert_allclose(blended[:, :, :12], 0.1, atol=1e-4)
    assert blended[:, :, 20:].max() <= 0.1 + 1e-3


def test_resolve_fallback_uses_the_checkpoint():
    assert resolve_fallback("auto", {}) == "none"
    assert resolve_fallback("auto", {"fallback": "difference"}) == "difference"
    assert resolve_fallback("auto", {"fallback": "calibrated"}) == "none"  # not calibrated
    assert resolve_fallback("auto", {"fallback": "calibrated", "change_limit": 0.1}) == "calibrated"
    assert resolve_fallback("none", {"fallback": "difference"}) == "none"


def test_loso_rows_pool_seeds_and_flag_harm():
    scores = [held_out_scores(name, metrics) for name, metrics in [
        ("a", {"holdout": 1, "content": "nucleus", "test/volumes": {"v1": 0.2, "v2": 0.1}}),
        ("b", {"holdout": 1, "content": "nucleus", "test/volumes": {"v1": 0.3, "v2": -0.05}}),
        ("c", {"holdout": 2, "content": "nucleus", "test/volumes": {"v3": 0.4}}),
    ]]
    assert held_out_scores("x", {"content": "nucleus"}) is None
    rows = loso_rows(scores)
    by_study = {r["held_out"]: r for r in rows}
    assert by_study["1"]["volumes"] == 4 and by_study["1"]["mean"] == pytest.approx(0.1375)
    assert by_study["1"]["worst"] == pytest.approx(-0.05) and by_study["1"]["harmed"] == 1
    assert -0.05 < HARM_LIMIT
    # Overall: the mean of the held-out studies' means, the worst of all volumes.
    assert by_study["all"]["mean"] == pytest.approx((0.1375 + 0.4) / 2)
    assert by_study["all"]["worst"] == pytest.approx(-0.05)
    assert "| nucleus | **all** | 5 |" in loso_markdown(rows)
    assert not math.isnan(by_study["2"]["mean"])
