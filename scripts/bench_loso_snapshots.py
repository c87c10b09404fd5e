"""Snapshot ensembles from one run: do a run's own validated checkpoints, averaged, steady an
unseen study? A leave-one-study-out check on runs that kept every validated checkpoint.

    python scripts/bench_loso.py --label ema-snap --seeds 0 1 2 --holdouts 4 \\
        --fmc "callbacks.checkpoint.save_top_k=-1"
    python scripts/bench_loso_snapshots.py --label ema-snap [--out OUT]
    python scripts/bench_loso_snapshots.py --label ema-snap --rows OUT/snapshot_results.jsonl

Each run of ``--label`` (``OUT/results.jsonl`` of scripts/bench_loso.py) kept one checkpoint per
whole-volume validation (``checkpoints/best-step<N>-vnssim<score>.ckpt``; with
``callbacks.checkpoint.save_top_k=-1``). For each run the script predicts its test volumes (a
held-out study's four, or every study's test volume for the in-domain ``study=all`` run) with
each snapshot, as ``fmc.predict`` would, and scores:

* ``final``: the last snapshot alone (what the run's checkpoint gives with save_top_k=1 when the
  last validation is the best);
* ``last2``: the mean of the last two snapshots' predictions (two forward passes per tile);
* ``top2``: the mean of the two snapshots with the best validation score;
* ``half``: the mean of every snapshot from the second half of the run (steps 600 and 800
  with validation every 200 of 800 steps: the same as ``last2`` there).

The mean is taken before the input fallback, which uses the selected checkpoint's calibrated
change limit (intermediate snapshots have none of their own). Rows go to
``OUT/snapshot_results.jsonl``; the table gives each rule's mean per seed, its worst volume, and
its ratio to the same seed's in-domain score of the same rule.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loso import read_rows, study_of  # noqa: E402
from benchtools import REPO, append_jsonl, read_jsonl, table_header  # noqa: E402

from fmc.core.locations import embedded_h5_dir  # noqa: E402

SNAPSHOT = re.compile(r"best-step(\d+)-vnssim(-?[0-9.]+)\.ckpt$")
RULES = ("final", "last2", "top2", "half")


def snapshots(run: Path) -> list[tuple[int, float, Path]]:
    """(step, validation score, path) of each validated checkpoint of ``run``, by step."""
    found = []
    for path in (run / "checkpoints").glob("best-step*.ckpt"):
        match = SNAPSHOT.search(path.name)
        if match:
            found.append((int(match.group(1)), float(match.group(2)), path))
    return sorted(found)


def members(found: list[tuple[int, float, Path]], rule: str, steps: int) -> list[int]:
    """Indices into ``found`` (sorted by step) that ``rule`` averages."""
    if rule == "final":
        return [len(found) - 1]
    if rule == "last2":
        return list(range(len(found)))[-2:]
    if rule == "top2":
        return sorted(sorted(range(len(found)), key=lambda i: -found[i][1])[:2])
    if rule == "half":
        return [i for i, (step, _, _) in enumerate(found) if step > steps // 2]
    raise ValueError(rule)


def score_run(row: dict, h5: Path) -> dict:
    """Every rule's per-volume N_SSIM for one bench_loso run."""
    import h5py

    from fmc.evaluation.metrics import n_ssim
    from fmc.evaluation.volume_scoring import scoring_settings
    from fmc.inference.volume_prediction import fallback_in_memory, predict_volume
    from fmc.io.h5 import RAW_IMAGE
    from fmc.models.checkpoint import load_fusion_module
    from fmc.preprocessing.splits import read_list

    found = snapshots(Path(row["run"]))
    selected = load_fusion_module(row["checkpoint"], "cpu").hparams
    prefix = f"holdout{row['holdout']}" if row["holdout"] else "all"
    pairs = read_list(h5 / "lists" / f"{prefix}_{row['content']}_test.csv", h5)
    scores: dict[str, dict[str, float]] = {rule: {} for rule in RULES}
    models = [load_fusion_module(path, "cpu") for _, _, path in found]
    for angle_path, fused_path in pairs:
        raw = [predict_volume(m, angle_path, scoring_settings(0.5, 4, "none")) for m in models]
        with h5py.File(angle_path, "r") as angle, h5py.File(fused_path, "r") as fused:
            view, target = angle[RAW_IMAGE][...], fused[RAW_IMAGE][...]
        for rule in RULES:
            mean = np.mean([raw[i] for i in members(found, rule, row["max_steps"])], axis=0)
            mean = fallback_in_memory(view, mean, selected)
            scores[rule][Path(angle_path).name] = float(n_ssim(mean, target, view))
    return {"label": row["label"], "seed": row["seed"], "content": row["content"],
            "holdout": row["holdout"], "snapshots": [[s, v] for s, v, _ in found],
            "members": {rule: [found[i][0] for i in members(found, rule, row["max_steps"])]
                        for rule in RULES},
            "volumes": scores}


def table(results: list[dict], h5: Path) -> str:
    """One row per rule, content, held-out study and seed: mean, worst volume, ratio to the same
    seed's in-domain score of the same rule on that study's volumes."""
    in_domain = {}
    for r in results:
        if r["holdout"] is None:
            for rule in RULES:
                for name, value in r["volumes"][rule].items():
                    in_domain[(rule, r["content"], r["seed"], study_of(name, h5))] = value
    lines = [table_header("rule", "content", "held-out study", "members (steps)",
                          "per seed: mean (ratio)", "mean of seeds", "worst seed's ratio",
                          "worst volume", "in-domain (study=all), mean of seeds")]
    keys = sorted({(r["content"], r["holdout"]) for r in results if r["holdout"]},
                  key=lambda k: (k[0] != "nucleus", k[1]))
    for rule in RULES:
        for content, holdout in keys:
            runs = sorted((r for r in results if r["content"] == content
                           and r["holdout"] == holdout), key=lambda r: r["seed"])
            cells, ratios, means, worst = [], [], [], np.inf
            for r in runs:
                mean = float(np.mean(list(r["volumes"][rule].values())))
                reference = in_domain.get((rule, content, r["seed"], holdout))
                ratio = mean / reference if reference else float("nan")
                cells.append(f"s{r['seed']} {mean:+.3f} ({ratio:.2f})")
                ratios.append(ratio)
                means.append(mean)
                worst = min(worst, min(r["volumes"][rule].values()))
            domain = [float(np.mean(list(r["volumes"][rule].values()))) for r in results
                      if r["content"] == content and r["holdout"] is None]
            steps = ", ".join(str(s) for s in runs[0]["members"][rule]) if runs else "-"
            lines.append(f"| {rule} | {content} | {holdout} | {steps} | {', '.join(cells)} | "
                         f"{np.mean(means):+.4f} | {min(ratios):.2f} | {worst:+.4f} | "
                         f"{np.mean(domain):+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_loso")
    parser.add_argument("--rows", type=Path, help="print the table of these saved rows")
    args = parser.parse_args()
    h5 = embedded_h5_dir()
    if args.rows:
        results = [r for r in read_jsonl(args.rows) if r["label"] == args.label]
    else:
        results = []
        for row in read_rows(args.out):
            if row["label"] == args.label and row["fallback"] == "checkpoint" \
                    and len(snapshots(Path(row["run"]))) >= 2:
                results.append(score_run(row, h5))
                append_jsonl(args.out / "snapshot_results.jsonl", results[-1])
                print(json.dumps({k: results[-1][k] for k in ("seed", "content", "holdout")}),
                      flush=True)
    print(table(results, h5))


if __name__ == "__main__":
    main()
