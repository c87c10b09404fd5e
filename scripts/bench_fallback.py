"""Does the input fallback (or flip TTA) help N_SSIM? Measured on the synthetic held-out volumes.

    python scripts/bench_fallback.py --ckpt CKPT --content nucleus [--ckpt CKPT2 --content membrane]

For each checkpoint, predicts the validation + test volumes of its content (from
$FMC_DATA/synthetic_h5/lists) with every variant below through the real ``fmc.predict`` command, scores
them with ``fmc.evaluate`` (the challenge's N_SSIM) and prints one table. The default of
``fallback`` in conf/predict.yaml was set from this table (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import REPO, machine, markdown_table, run_module  # noqa: E402

from fmc.core.locations import embedded_h5_dir  # noqa: E402

LISTS = embedded_h5_dir() / "lists"
VARIANTS = {
    "plain": [],
    "fallback=difference": ["fallback=difference"],
    "tta=[y,x]": ["tta=[y,x]"],
    "tta=[y,x] + difference": ["tta=[y,x]", "fallback=difference"],
}


def held_out_list(content: str, out: Path) -> Path:
    """Validation and test pairs of one content in one list (the volumes training never saw)."""
    lines = []
    for split in ("val", "test"):
        lines += (LISTS / f"all_{content}_{split}.csv").read_text().splitlines()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(line for line in lines if line.strip()) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", action="append", required=True)
    parser.add_argument("--content", action="append", required=True)
    parser.add_argument("--out", default="outputs/bench_fallback")
    args = parser.parse_args()
    out = REPO / args.out
    rows = []
    for ckpt, content in zip(args.ckpt, args.content, strict=True):
        listed = held_out_list(content, out / f"{content}_heldout.csv")
        # The list's paths are relative to the embedded H5 folder: rewrite them absolute.
        root = LISTS.parent
        listed.write_text("".join(";".join(str(root / p) for p in line.split(";")) + "\n"
                                  for line in listed.read_text().split()))
        for name, overrides in VARIANTS.items():
            folder = out / content / name.replace(" ", "").replace("=", "-").replace("[", "")\
                .replace("]", "").replace(",", "").replace("+", "_")
            seconds = run_module("fmc.predict", f"ckpt={ckpt}", f"input={listed}",
                                 f"output={folder / 'pred'}", "progress=false", *overrides,
                                 log=folder / "predict.log")
            run_module("fmc.evaluate", f"prediction={folder / 'pred'}", f"split_list={listed}",
                       f"output={folder / 'scores'}", "progress=false", log=folder / "evaluate.log")
            with open(folder / "scores" / "summary.csv", newline="") as handle:
                summary = list(csv.DictReader(handle))
            row = next(r for r in summary if r["study"] == "all" and r["method"] != "identity")
            score = float(row["mean_n_ssim"])
            rows.append((content, name, row["n_scored"], f"{score:+.4f}", f"{seconds:.0f} s"))
            print(f"{content:9s} {name:24s} N_SSIM {score:+.4f} "
                  f"({row['n_scored']} volumes, predict {seconds:.0f} s)", flush=True)
    print(machine())
    print(markdown_table(("content", "variant", "volumes", "mean N_SSIM", "predict time"), rows))


if __name__ == "__main__":
    main()
