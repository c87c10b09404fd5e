"""scripts/bench_recipe.py ``--members N``: the budget split between N training runs whose
checkpoints ``fmc.predict`` averages (the commands are recorded, not run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_recipe", ROOT / "scripts" / "bench_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_recipe", recipe)
    spec.loader.exec_module(recipe)
    return recipe


def test_an_ensemble_shares_the_budget_and_is_predicted_as_one(tmp_path: Path, monkeypatch):
    recipe = load_recipe(monkeypatch)
    calls = []

    def fake_fmc(*args, log):
        calls.append(args)
        keys = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        if args[0] == "fmc.train":  # what a finished run leaves
            folder = Path(keys["hydra.run.dir"])
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(
                {"best/checkpoint": str(folder / f"seed{keys['seed']}.ckpt"), "global_step": 50}))
        if args[0] == "fmc.evaluate":
            (Path(keys["output"])).mkdir(parents=True)
            (Path(keys["output"]) / "summary.csv").write_text(
                "method,study,content,mean_n_ssim,n_scored\nprediction,all,nucleus,0.25,5\n")
        return 10.0

    monkeypatch.setattr(recipe, "run_module", fake_fmc)
    row = recipe.run_fmc(tmp_path / "raw", tmp_path / "h5", "nucleus", 2, 3.0, ["model.lr=0.001"],
                         tmp_path / "run", members=3)
    trains = [c for c in calls if c[0] == "fmc.train"]
    assert [c[3] for c in trains] == ["seed=2", "seed=1002", "seed=2002"]
    assert all("trainer.max_time=00:00:01:00" in c for c in trains)  # 3 min / 3
    assert all("model.lr=0.001" in c for c in trains)
    predict = next(c for c in calls if c[0] == "fmc.predict")
    members = [str(tmp_path / "run" / f"member{i}" / f"seed{s}.ckpt")
               for i, s in enumerate((2, 1002, 2002))]
    assert f"ckpt=[{','.join(members)}]" in predict
    assert row["members"] == 3 and row["steps"] == 150 and row["test_n_ssim"] == 0.25
    # One model: the whole budget, a single checkpoint.
    calls.clear()
    row = recipe.run_fmc(tmp_path / "raw", tmp_path / "h5", "nucleus", 2, 3.0, [],
                         tmp_path / "single")
    assert "trainer.max_time=00:00:03:00" in calls[0]
    assert f"ckpt={tmp_path / 'single' / 'seed2.ckpt'}" in calls[1] and "members" not in row


def test_the_spread_over_seeds_names_the_worst_seed(tmp_path: Path, monkeypatch):
    recipe = load_recipe(monkeypatch)
    rows = [{"set": "embedded", "content": "nucleus", "minutes": 3.0, "label": "defaults",
             "seed": seed, "test_n_ssim": value, "steps": 100}
            for seed, value in ((0, 0.30), (1, 0.20), (2, 0.25), (1, 0.22))]  # seed 1 re-run
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = recipe.spread_table(tmp_path / "results.jsonl")
    # The latest row per seed: 0.30, 0.22, 0.25 -> mean 0.2567, std 0.0404, worst s1.
    assert "| embedded | nucleus | 3 min | defaults | 3 | +0.2567 | +0.2200 | +0.3000 | 0.0404 " \
        "| s1 |" in table
