"""Does averaging the seeds' models steady an unseen study? A leave-one-study-out check.

    python scripts/bench_loso_ensemble.py --label lateral --holdouts 0 1 2 3 4 5 [--out OUT]

For each content and held-out study K, the checkpoints of ``--label``'s held-out runs (one per
seed, from ``OUT/results.jsonl`` of scripts/bench_loso.py) each predict study K's volumes as
``fmc.predict`` would (the checkpoint's own confidence head and fallback); the mean of their
predictions is scored too. Prints one row per content and held-out study: each seed's mean
N_SSIM over the volumes, their mean, and the ensemble's mean and worst volume. Held-out study
``0`` stands for the in-domain references (``study=all``, every study's test volume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def ensemble_rows(out: Path, label: str, holdouts: list[int], contents: list[str]) -> list[dict]:
    """Score each seed's model and the mean of their predictions on each held-out study."""
    import h5py

    from fmc.evaluation.metrics import n_ssim
    from fmc.evaluation.volume_scoring import predict_h5_volume
    from fmc.inference.prediction import load_model
    from fmc.io.h5 import RAW_IMAGE
    from fmc.preprocessing.splits import read_list

    h5 = REPO / "data" / "synthetic_h5"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
            if line.strip()]
    results = []
    for content in contents:
        for holdout in holdouts:
            wanted = holdout or None  # 0: the in-domain reference runs
            runs = sorted((r for r in rows if r["label"] == label and r["content"] == content
                           and r["holdout"] == wanted and r["fallback"] == "checkpoint"),
                          key=lambda r: r["seed"])
            if len(runs) < 2:
                continue
            models = [load_model(r["checkpoint"], "cpu") for r in runs]
            prefix = f"holdout{holdout}" if holdout else "all"
            pairs = read_list(h5 / "lists" / f"{prefix}_{content}_test.csv", h5)
            per_seed = np.zeros((len(models), len(pairs)))
            together = []
            for j, (angle_path, fused_path) in enumerate(pairs):
                predictions = [predict_h5_volume(m, angle_path, overlap=0.5, batch_size=4)
                               for m in models]
                with h5py.File(angle_path, "r") as angle, h5py.File(fused_path, "r") as fused:
                    view, target = angle[RAW_IMAGE][...], fused[RAW_IMAGE][...]
                for i, prediction in enumerate(predictions):
                    per_seed[i, j] = n_ssim(prediction, target, view)
                together.append(n_ssim(np.mean(predictions, axis=0), target, view))
            results.append({"label": label, "content": content, "holdout": holdout,
                            "seeds": [r["seed"] for r in runs],
                            "per_seed": per_seed.mean(axis=1).tolist(),
                            "ensemble": float(np.mean(together)),
                            "ensemble_worst": float(np.min(together))})
            print(json.dumps(results[-1]), flush=True)
    return results


def table(results: list[dict]) -> str:
    lines = ["| variant | content | held-out study | per seed | mean of seeds | ensemble | "
             "ensemble worst volume |", "|---|---|---|---|---|---|---|"]
    for r in results:
        seeds = ", ".join(f"s{s} {v:+.3f}" for s, v in zip(r["seeds"], r["per_seed"], strict=True))
        lines.append(f"| {r['label']} | {r['content']} | {r['holdout']} | {seeds} | "
                     f"{np.mean(r['per_seed']):+.4f} | {r['ensemble']:+.4f} | "
                     f"{r['ensemble_worst']:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--holdouts", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--contents", nargs="+", default=["nucleus", "membrane"])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_loso")
    args = parser.parse_args()
    print(table(ensemble_rows(args.out, args.label, args.holdouts, args.contents)))


if __name__ == "__main__":
    main()
