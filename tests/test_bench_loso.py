"""scripts/bench_loso.py's summary: the goal verdicts, and ``LABEL@REF`` (one label's held-out runs
against another's in-domain reference runs, as the holdout-only lateral flips are judged)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_loso.py"


def load_bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_loso", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_loso", bench)
    spec.loader.exec_module(bench)
    # Volume names say their study here ("s<k>_..."); the real script reads the H5 attributes.
    monkeypatch.setattr(bench, "study_of", lambda name, h5: int(name[1]))
    return bench


def load_script(name: str):
    """scripts/<name>.py as a module (after :func:`load_bench`, which it imports)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(label: str, content: str, holdout: int | None, volumes: dict[str, float]) -> dict:
    return {"label": label, "seed": 0, "content": content, "holdout": holdout,
            "fallback": "checkpoint", "volumes": volumes}


def test_a_label_is_judged_against_another_labels_reference(tmp_path: Path, monkeypatch):
    bench = load_bench(monkeypatch)
    rows = []
    for content in ("nucleus", "membrane"):
        rows.append(row("base", content, None, {"s1_test": 0.30, "s2_test": 0.20}))
        rows.append(row("wide", content, None, {"s1_test": 0.20, "s2_test": 0.10}))
        rows.append(row("base", content, 1, {"s1_a": 0.10, "s1_b": 0.12}))
        rows.append(row("base", content, 2, {"s2_a": 0.15, "s2_b": -0.03}))
        rows.append(row("wide", content, 1, {"s1_a": 0.16, "s1_b": 0.18}))
        rows.append(row("wide", content, 2, {"s2_a": 0.12, "s2_b": 0.10}))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = bench.summary(tmp_path, ["base", "wide", "wide@base"])
    # base: study 1 at 0.11 / 0.30 = 0.37, a volume at -0.03 -> both conditions fail.
    assert "| base | nucleus | 1 | +0.1100 | +0.1000 | +0.3000 | 0.37 | 1 |" in table
    assert "- base nucleus: every held-out study >= half of in-domain: no; no volume < -0.02: no" \
        in table
    # wide against its own, lower reference: 0.17 / 0.20 and 0.11 / 0.10.
    assert "| wide | membrane | 1 | +0.1700 | +0.1600 | +0.2000 | 0.85 | 1 |" in table
    # wide's held-out runs against base's reference: 0.17 / 0.30 = 0.57, 0.11 / 0.20 = 0.55.
    assert "| wide@base | nucleus | 1 | +0.1700 | +0.1600 | +0.3000 | 0.57 | 1 |" in table
    assert "| wide@base | nucleus | **all** | +0.1400 | +0.1000 | +0.2500 | 0.55 (min) | |" in table
    assert "- wide@base membrane: every held-out study >= half of in-domain: yes; no volume < " \
        "-0.02: yes" in table
    overview = bench.overview(tmp_path, ["wide@base"])
    assert "| wide@base | membrane | +0.1400 | +0.1000 | +0.2500 | 0.55 |" in overview


def test_the_ensemble_table_divides_by_the_single_models_in_domain_score(tmp_path: Path,
                                                                          monkeypatch):
    load_bench(monkeypatch)  # bench_loso with volume names that say their study
    ensemble = load_script("bench_loso_ensemble")
    monkeypatch.setattr(ensemble, "study_of", lambda name, h5: int(name[1]))
    rows = [dict(row("wide", "nucleus", None, {"s4_test": v}), seed=seed)
            for seed, v in ((0, 0.30), (1, 0.10))]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    in_domain = ensemble.single_model_in_domain(tmp_path, "wide")
    assert in_domain == {("nucleus", 4): pytest.approx(0.20)}
    result = {"label": "wide", "content": "nucleus", "holdout": 4, "seeds": [0, 1],
              "per_seed": [0.1, -0.05], "ensemble": 0.15, "ensemble_worst": 0.12}
    table = ensemble.table([result], in_domain)
    assert "| nucleus | 4 | s0 +0.100, s1 -0.050 | +0.0250 | +0.1500 | +0.1200 | 0.75 |" in table
    # --versus: another label's single models on the same held-out study (mean of seeds, worst
    # volume of any), and their in-domain score as the ratio's reference.
    single = [dict(row("long", "nucleus", 4, {"a": a, "b": b}), seed=seed, test_n_ssim=(a + b) / 2)
              for seed, a, b in ((0, 0.2, 0.0), (1, 0.1, 0.1))]
    single += [dict(row("long", "nucleus", None, {"s4_test": 0.5}), test_n_ssim=0.5)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + single))
    versus = ensemble.single_model_loso(tmp_path, "long")
    assert versus[("nucleus", 4)] == (pytest.approx(0.1), pytest.approx(0.0))
    table = ensemble.table([result], ensemble.single_model_in_domain(tmp_path, "long"), versus,
                           "long")
    assert "| +0.1500 | +0.1200 | 0.30 | +0.1000 | +0.0000 |" in table


def test_an_ensemble_takes_one_kept_run_per_seed_from_the_recipes_labels(tmp_path: Path,
                                                                          monkeypatch):
    load_bench(monkeypatch)
    ensemble = load_script("bench_loso_ensemble")
    kept = tmp_path / "kept.ckpt"
    kept.write_text("x")
    newer = tmp_path / "newer.ckpt"
    newer.write_text("x")

    def run(label, seed, checkpoint, holdout=4):
        return dict(row(label, "membrane", holdout, {}), seed=seed, checkpoint=str(checkpoint))

    rows = [run("base", 0, tmp_path / "gone.ckpt"), run("base", 2, kept),
            run("base-kept", 0, kept), run("base-kept", 1, kept), run("base-kept", 1, newer),
            run("other", 3, kept), run("base", 5, kept, holdout=3)]
    runs = ensemble.kept_runs(rows, ["base", "base-kept"], "membrane", 4)
    assert [(r["label"], r["seed"], Path(r["checkpoint"]).name) for r in runs] == [
        ("base-kept", 0, "kept.ckpt"), ("base-kept", 1, "newer.ckpt"), ("base", 2, "kept.ckpt")]


def test_the_seed_spread_judges_the_worst_seed_against_its_own_reference(tmp_path: Path,
                                                                         monkeypatch):
    bench = load_bench(monkeypatch)
    rows = []
    for seed, (reference, held) in enumerate([(0.30, 0.20), (0.20, 0.06), (0.25, 0.15)]):
        rows.append({**row("base", "nucleus", None, {"s1_test": reference}), "seed": seed})
        rows.append({**row("base", "nucleus", 1, {"s1_a": held, "s1_b": held - 0.02 * seed}),
                     "seed": seed})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = bench.seed_spread(tmp_path, ["base"])
    # seed 1: mean 0.05 over its own reference 0.20 = 0.25, the worst seed; its volume +0.04.
    assert "| base | nucleus | 1 | s0 +0.200 (0.67), s1 +0.050 (0.25), s2 +0.130 (0.52) | " \
        "+0.0500 | +0.2000 | 0.0751 | 0.25 | +0.0400 |" in table
    assert "- base nucleus: worst seed's lowest held-out / in-domain 0.25 (< 0.5); worst volume " \
        "of any seed +0.0400 (>= -0.02)" in table


def test_the_snapshot_rules_pick_their_members_from_the_run_checkpoints(tmp_path: Path,
                                                                        monkeypatch):
    load_bench(monkeypatch)
    snapshots = load_script("bench_loso_snapshots")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("best-step200-vnssim0.1000.ckpt", "best-step400-vnssim0.3000.ckpt",
                 "best-step600-vnssim0.2000.ckpt", "best-step800-vnssim0.2500.ckpt", "last.ckpt"):
        (folder / name).write_bytes(b"")
    found = snapshots.snapshots(tmp_path)
    assert [step for step, _, _ in found] == [200, 400, 600, 800]
    steps = {rule: [found[i][0] for i in snapshots.members(found, rule, 800)]
             for rule in snapshots.RULES}
    assert steps == {"final": [800], "last2": [600, 800], "top2": [400, 800],
                     "half": [600, 800]}


def test_the_snapshot_table_divides_each_seed_by_its_own_in_domain_score_of_the_same_rule(
        tmp_path: Path, monkeypatch):
    load_bench(monkeypatch)
    snapshots = load_script("bench_loso_snapshots")

    def scored(seed: int, holdout: int | None, final: dict, last2: dict) -> dict:
        return {"label": "snap", "seed": seed, "content": "membrane", "holdout": holdout,
                "snapshots": [[600, 0.2], [800, 0.25]],
                "members": {"final": [800], "last2": [600, 800], "top2": [600, 800],
                            "half": [600, 800]},
                "volumes": {"final": final, "last2": last2, "top2": last2, "half": last2}}

    results = [
        scored(0, None, {"s4_test": 0.40, "s1_test": 0.10}, {"s4_test": 0.30, "s1_test": 0.10}),
        scored(1, None, {"s4_test": 0.20, "s1_test": 0.10}, {"s4_test": 0.25, "s1_test": 0.10}),
        scored(0, 4, {"s4_a": 0.20, "s4_b": 0.10}, {"s4_a": 0.16, "s4_b": 0.14}),
        scored(1, 4, {"s4_a": 0.02, "s4_b": 0.04}, {"s4_a": 0.06, "s4_b": 0.04}),
    ]
    table = snapshots.table(results, tmp_path)
    # final: seed 0 0.15 / 0.40, seed 1 0.03 / 0.20; last2: 0.15 / 0.30, 0.05 / 0.25.
    assert "| final | membrane | 4 | 800 | s0 +0.150 (0.38), s1 +0.030 (0.15) | +0.0900 | 0.15 " \
        "| +0.0200 | +0.2000 |" in table
    assert "| last2 | membrane | 4 | 600, 800 | s0 +0.150 (0.50), s1 +0.050 (0.20) | +0.1000 | " \
        "0.20 | +0.0400 | +0.1875 |" in table
