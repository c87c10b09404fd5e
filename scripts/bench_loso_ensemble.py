"""Does averaging the seeds' models steady an unseen study? A leave-one-study-out check.

    python scripts/bench_loso_ensemble.py --label lateral --holdouts 0 1 2 3 4 5 [--out OUT]
    python scripts/bench_loso_ensemble.py --label lateral --rows OUT/ensemble_results.jsonl
    python scripts/bench_loso_ensemble.py --label basicunet basicunet-kept --versus basicunet ...

For each content and held-out study K, the checkpoints of ``--label``'s held-out runs (one per
seed, from ``OUT/results.jsonl`` of scripts/bench_loso.py) each predict study K's volumes as
``fmc.predict`` would (the checkpoint's own confidence head and fallback); the mean of their
predictions is scored too. Prints one row per content and held-out study: each seed's mean
N_SSIM over the volumes, their mean, the ensemble's mean and worst volume, and the ensemble over
the single models' in-domain score on that study (the label's ``study=all`` runs, as
``bench_loso.py --summary`` gives it). Held-out study ``0`` stands for the in-domain references
(``study=all``, every study's test volume). The rows are appended to
``OUT/ensemble_results.jsonl``; ``--rows FILE`` prints the table of saved rows again.
Several labels (one recipe run in parts): each seed's latest run whose checkpoint still exists.
``--versus LABEL`` adds that label's single models (mean of seeds, worst volume) and takes its
in-domain runs as the ratio's reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loso import read_rows, study_of  # noqa: E402
from benchtools import REPO, append_jsonl, read_jsonl, table_header  # noqa: E402

from fmc.core.locations import embedded_h5_dir  # noqa: E402
from fmc.core.studies import CONTENTS, EMBEDDED_STUDIES  # noqa: E402


def kept_runs(rows: list[dict], labels: list[str], content: str, holdout: int | None) -> list[dict]:
    """One run per seed from any of ``labels`` whose checkpoint still exists (the latest row of a
    seed wins), sorted by seed."""
    by_seed = {}
    for row in rows:
        if row["label"] in labels and row["content"] == content and row["holdout"] == holdout \
                and row["fallback"] == "checkpoint" and Path(row.get("checkpoint") or "").is_file():
            by_seed[row["seed"]] = row
    return [by_seed[seed] for seed in sorted(by_seed)]


def ensemble_rows(out: Path, labels: list[str], holdouts: list[int], contents: list[str]
                  ) -> list[dict]:
    """Score each seed's model and their ensemble (as ``fmc.predict ckpt=[...]`` computes it) on
    each held-out study; the seeds' runs may come from several labels of one recipe."""
    import h5py

    from fmc.evaluation.metrics import n_ssim
    from fmc.evaluation.volume_scoring import scoring_settings
    from fmc.inference.ensemble import ensemble_hparams
    from fmc.inference.volume_prediction import fallback_in_memory, predict_volume
    from fmc.io.h5 import RAW_IMAGE
    from fmc.models.checkpoint import load_fusion_module
    from fmc.preprocessing.splits import read_list

    h5 = embedded_h5_dir()
    rows = read_rows(out)
    results = []
    for content in contents:
        for holdout in holdouts:
            wanted = holdout or None  # 0: the in-domain reference runs
            runs = kept_runs(rows, labels, content, wanted)
            if len(runs) < 2:
                continue
            models = [load_fusion_module(r["checkpoint"], "cpu") for r in runs]
            together_hp = ensemble_hparams(models)
            prefix = f"holdout{holdout}" if holdout else "all"
            pairs = read_list(h5 / "lists" / f"{prefix}_{content}_test.csv", h5)
            per_seed = np.zeros((len(models), len(pairs)))
            together = []
            for j, (angle_path, fused_path) in enumerate(pairs):
                # Each model's network output once; its own fallback for its own score, the
                # ensemble's (mean change_limit) on the mean. fmc.predict averages per tile before
                # the (linear) blend: the same mean up to float32 rounding
                # (tests/inference/test_ensemble.py).
                raw = [predict_volume(m, angle_path, scoring_settings(0.5, 4, "none"))
                       for m in models]
                with h5py.File(angle_path, "r") as angle, h5py.File(fused_path, "r") as fused:
                    view, target = angle[RAW_IMAGE][...], fused[RAW_IMAGE][...]
                for i, (model, prediction) in enumerate(zip(models, raw, strict=True)):
                    prediction = fallback_in_memory(view, prediction, model.hparams)
                    per_seed[i, j] = n_ssim(prediction, target, view)
                mean = np.mean(raw, axis=0)
                mean = fallback_in_memory(view, mean, together_hp)
                together.append(n_ssim(mean, target, view))
            results.append({"label": ",".join(labels), "content": content, "holdout": holdout,
                            "seeds": [r["seed"] for r in runs],
                            "per_seed": per_seed.mean(axis=1).tolist(),
                            "ensemble": float(np.mean(together)),
                            "ensemble_worst": float(np.min(together)),
                            "fallback": "after the mean (fmc.predict)"})
            append_jsonl(out / "ensemble_results.jsonl", results[-1])
            print(json.dumps(results[-1]), flush=True)
    return results


def single_model_in_domain(out: Path, label: str) -> dict[tuple[str, int], float]:
    """(content, study) -> the mean over ``label``'s ``study=all`` runs of that study's test volumes."""
    h5 = embedded_h5_dir()
    values: dict[tuple[str, int], list[float]] = {}
    for row in read_rows(out):
        if row["label"] == label and row["holdout"] is None and row["fallback"] == "checkpoint":
            for name, value in row["volumes"].items():
                values.setdefault((row["content"], study_of(name, h5)), []).append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def single_model_loso(out: Path, label: str) -> dict[tuple[str, int], tuple[float, float]]:
    """(content, held-out study or 0) -> mean over ``label``'s seeds and their worst volume."""
    found: dict[tuple[str, int], list[dict]] = {}
    for row in read_rows(out):
        if row["label"] == label and row["fallback"] == "checkpoint":
            found.setdefault((row["content"], row["holdout"] or 0), []).append(row)
    return {key: (float(np.mean([r["test_n_ssim"] for r in rows])),
                  float(min(min(r["volumes"].values()) for r in rows)))
            for key, rows in found.items()}


def table(results: list[dict], in_domain: dict[tuple[str, int], float],
          versus: dict[tuple[str, int], tuple[float, float]] | None = None,
          versus_label: str = "") -> str:
    """The docs table; with ``versus``, two more columns: another label's single models (mean of
    their seeds, worst volume of any) on the same held-out study."""
    extra = (f"single {versus_label} (mean of seeds)", "its worst volume") if versus else ()
    lines = [table_header("content", "held-out study", "per seed", "mean of seeds", "ensemble",
                          "ensemble worst volume", "ensemble / single-model "
                          f"{versus_label + ' ' if versus else ''}in-domain", *extra)]
    for r in sorted(results, key=lambda r: (r["content"] != "nucleus", r["holdout"])):
        seeds = ", ".join(f"s{s} {v:+.3f}" for s, v in zip(r["seeds"], r["per_seed"], strict=True))
        reference = in_domain.get((r["content"], r["holdout"]))
        ratio = f"{r['ensemble'] / reference:.2f}" if r["holdout"] and reference else "-"
        line = (f"| {r['content']} | {r['holdout'] or 'in-domain (study=all)'} | {seeds} | "
                f"{np.mean(r['per_seed']):+.4f} | {r['ensemble']:+.4f} | "
                f"{r['ensemble_worst']:+.4f} | {ratio} |")
        if versus:
            single = versus.get((r["content"], r["holdout"]))
            line += (f" {single[0]:+.4f} | {single[1]:+.4f} |" if single else " - | - |")
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, nargs="+",
                        help="the recipe's label(s): seeds' runs with kept checkpoints from any")
    parser.add_argument("--holdouts", type=int, nargs="+", default=list(EMBEDDED_STUDIES))
    parser.add_argument("--contents", nargs="+", default=list(CONTENTS))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_loso")
    parser.add_argument("--rows", type=Path, help="print the table of these saved rows")
    parser.add_argument("--versus", metavar="LABEL",
                        help="single models to compare with (e.g. the same compute in one run), "
                             "and the in-domain reference of the ratio column")
    args = parser.parse_args()
    if args.rows:
        results = [r for r in read_jsonl(args.rows) if r["label"] == ",".join(args.label)]
    else:
        results = ensemble_rows(args.out, args.label, args.holdouts, args.contents)
    reference = args.versus or args.label[0]
    versus = single_model_loso(args.out, args.versus) if args.versus else None
    print(table(results, single_model_in_domain(args.out, reference), versus, args.versus or ""))


if __name__ == "__main__":
    main()
