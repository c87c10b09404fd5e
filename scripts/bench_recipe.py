"""Quality per compute: fmc's training recipe against a plain-PyTorch peer at equal wall time.

    python scripts/bench_recipe.py --set embedded --minutes 5 --seeds 0 1 --peer PEER.py
    python scripts/bench_recipe.py --set hard --minutes 5 --seeds 0 1 --peer PEER.py
    python scripts/bench_recipe.py --set embedded --label lr1e-3 --fmc model.lr=0.001 ...
    python scripts/bench_recipe.py --set embedded --label ensemble3 --members 3 ...

For each seed, on the same data, the same wall-clock budget and the same cores (run one after
the other, never side by side):

* fmc: ``python -m fmc.train`` (``trainer.max_time`` = the budget, validation included) →
  ``python -m fmc.predict`` with the run's selected checkpoint on the test split list →
  ``python -m fmc.evaluate`` (the challenge's N_SSIM on whole volumes);
* the peer (``--peer``, a standalone trainer that reads the same TIFF folder and split lists and
  writes ``OUT/pred/*.tif``; its whole-volume validations count in its budget): trained for the
  same minutes, its predictions scored by the same ``fmc.evaluate``.

``--members N``: the fmc budget is split between N training runs (seeds ``s``, ``s + 1000``, ...)
and ``fmc.predict ckpt=[...]`` averages them — an ensemble at the same total training time.

Prints one row per run and the ratio of the means (fmc / peer), and appends every row to
``OUT/results.jsonl`` (docs/benchmarks.md quotes it).

Data sets: ``embedded`` is fmc's default synthetic set (``$FMC_DATA/synthetic``, 4 pairs per
study/content, demo voxels); ``hard`` is made here on first use: 6 pairs per study of the chosen
content at 1.5x finer voxels (the same specimens' extent, 3.4x the voxels), with another seed
(``outputs/bench_data/hard/<content>``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import (  # noqa: E402
    REPO,
    append_jsonl,
    machine,
    markdown_table,
    max_time,
    read_jsonl,
    run_logged,
    run_module,
)

from fmc.core.locations import embedded_h5_dir, embedded_tiff_dir  # noqa: E402
from fmc.core.studies import STUDIES  # noqa: E402

HARD = REPO / "outputs" / "bench_data" / "hard"
HARD_SCALE = 1.5  # voxels per demo voxel along each axis
HARD_PAIRS = 6


# -- data ---------------------------------------------------------------------------------------
def data_set(name: str, content: str, logs: Path) -> tuple[Path, Path]:
    """(raw TIFF folder, prepared H5 folder) of a benchmark set, made on first use (the hard
    set: for ``content`` only)."""
    if name == "embedded":
        raw, h5 = embedded_tiff_dir(), embedded_h5_dir()
        run_module("fmc.prepare", "workers=2", "progress=false", log=logs / "prepare_embedded.log")
        return raw, h5
    if name != "hard":
        raise SystemExit(f"--set {name}: choose embedded or hard")
    raw, h5 = HARD / content / "raw", HARD / content / "h5"
    if not (h5 / "lists").is_dir():
        start = 0
        for study, profile in STUDIES.items():
            shape = [int(round(n * HARD_SCALE / 8)) * 8 for n in profile.demo_shape]
            run_module("fmc.synth", f"output={raw}", f"study={study}", f"content={content}",
                       f"n={HARD_PAIRS}", f"start={start}", f"shape=[{','.join(map(str, shape))}]",
                       f"scale={profile.demo_scale / HARD_SCALE:g}", "seed=2025",
                       log=logs / f"synth_hard_{study}_{content}.log")
            start += HARD_PAIRS
        run_module("fmc.prepare", f"input={raw}", f"output={h5}", "workers=2", "progress=false",
                   log=logs / "prepare_hard.log")
    return raw, h5


def mean_n_ssim(eval_dir: Path, content: str) -> tuple[float, int]:
    """Mean test N_SSIM of the evaluated method (all studies) and the number of volumes."""
    with (eval_dir / "summary.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row.get("study") == "all" and row.get("content") == content and \
                    row.get("method", "prediction") in ("prediction", "model", ""):
                return float(row["mean_n_ssim"]), int(row.get("n_scored") or 0)
    raise SystemExit(f"{eval_dir / 'summary.csv'}: no row for content {content}")


def evaluate(raw: Path, test_list: Path, content: str, out: Path) -> tuple[float, int]:
    """``fmc.evaluate`` of the predictions in ``OUT/pred`` on the test list: the mean test
    N_SSIM and the number of volumes (:func:`mean_n_ssim`)."""
    run_module("fmc.evaluate", f"input={raw}", f"prediction={out / 'pred'}",
               f"split_list={test_list}", f"output={out / 'eval'}", log=out.with_suffix(".evaluate.log"))
    return mean_n_ssim(out / "eval", content)


# -- the two trainers ---------------------------------------------------------------------------
def member_seeds(seed: int, members: int) -> list[int]:
    """The training seeds of an ensemble's members: the first is ``seed`` itself."""
    return [seed + 1000 * i for i in range(members)]


def run_fmc(raw: Path, h5: Path, content: str, seed: int, minutes: float, overrides: list[str],
            out: Path, members: int = 1) -> dict:
    """Train, predict the test list, score. With ``members`` > 1, the budget is split between
    that many runs (seeds :func:`member_seeds`) and ``fmc.predict`` averages their checkpoints
    (``ckpt=[...]``): an ensemble at the same total training time."""
    test_list = h5 / "lists" / f"all_{content}_test.csv"
    checkpoints, train_seconds, steps, metrics = [], 0.0, 0, {}
    for index, member_seed in enumerate(member_seeds(seed, members)):
        folder = out if members == 1 else out / f"member{index}"
        train_seconds += run_module("fmc.train", f"data.root={h5}", f"content={content}",
                                    f"seed={member_seed}", "logger=none",
                                    f"trainer.max_time={max_time(minutes * 60 / members)}",
                                    "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}",
                                    *overrides, log=folder.with_suffix(".train.log"))
        metrics = json.loads((folder / "metrics.json").read_text())
        checkpoints.append(metrics.get("best/checkpoint") or metrics["last_checkpoint"])
        steps += int(metrics.get("global_step") or 0)
    ckpt = checkpoints[0] if members == 1 else "[" + ",".join(checkpoints) + "]"
    run_module("fmc.predict", f"ckpt={ckpt}", f"input={test_list}", f"output={out / 'pred'}",
               "progress=false", "batch_size=4", log=out.with_suffix(".predict.log"))
    score, volumes = evaluate(raw, test_list, content, out)
    row = {"trainer": "fmc", "test_n_ssim": score, "volumes": volumes,
           "in_training_test_n_ssim": metrics.get("test/n_ssim"),
           "steps": steps, "train_wall_s": round(train_seconds, 1),
           "selection": metrics.get("selection"), "best_val": metrics.get("best/val_n_ssim")}
    if members > 1:
        row["members"] = members  # steps: summed over the members; in_training: the last's
    return row


def run_peer(peer: Path, raw: Path, h5: Path, content: str, seed: int, minutes: float,
             eval_every: float, out: Path) -> dict:
    test_list = h5 / "lists" / f"all_{content}_test.csv"
    train_seconds = run_logged([sys.executable, str(peer), "--raw", str(raw), "--lists",
                                str(h5 / "lists"), "--content", content, "--minutes",
                                f"{minutes:g}", "--eval-every", f"{eval_every:g}", "--seed",
                                str(seed), "--out", str(out)], out.with_suffix(".train.log"))
    score, volumes = evaluate(raw, test_list, content, out)
    result = json.loads((out / "result.json").read_text())
    return {"trainer": "peer", "test_n_ssim": score, "volumes": volumes,
            "peer_own_test_mean": result.get("test_mean"), "steps": result.get("steps"),
            "train_wall_s": round(train_seconds, 1), "best_val": result.get("best_val_n_ssim")}


def _groups(results: Path) -> dict[tuple, list[dict]]:
    """The latest row per seed of ``results.jsonl``, grouped by (set, content, budget, label)."""
    latest: dict[tuple, dict] = {}
    for row in read_jsonl(results):
        latest[(row["set"], row["content"], row["minutes"], row["label"], row["seed"])] = row
    groups: dict[tuple, list[dict]] = {}
    for (set_, content, minutes, label, _), row in sorted(latest.items(), key=lambda kv: str(kv[0])):
        groups.setdefault((set_, content, minutes, label), []).append(row)
    return groups


def summary_table(results: Path) -> str:
    """Markdown table of ``results.jsonl``: per set and configuration, each RWTH-GE's test N_SSIM,
    the mean, and the ratio to the peer's mean at the same budget (latest row per seed)."""
    groups = _groups(results)
    means = {key: sum(r["test_n_ssim"] for r in rows) / len(rows) for key, rows in groups.items()}
    table = []
    for key, rows in groups.items():
        set_, content, minutes, label = key
        peer = means.get((set_, content, minutes, "peer"))
        ratio = f"{means[key] / peer:.2f}" if peer and label != "peer" else "-"
        seeds = ", ".join(f"s{r['seed']} {r['test_n_ssim']:+.4f} ({r['steps']})"
                          for r in sorted(rows, key=lambda r: r["seed"]))
        table.append((set_, content, f"{minutes:g} min", label, seeds, f"{means[key]:+.4f}",
                      ratio))
    return markdown_table(("set", "content", "budget", "trainer", "per seed: test N_SSIM (steps)",
                           "mean", "ratio to peer"), table)


def spread_table(results: Path) -> str:
    """Markdown table of the spread over seeds: per set and configuration the mean, min, max
    and standard deviation (n - 1) of the seeds' test N_SSIM, and which seed was worst."""
    table = []
    for (set_, content, minutes, label), rows in _groups(results).items():
        values = [r["test_n_ssim"] for r in rows]
        worst = min(rows, key=lambda r: r["test_n_ssim"])
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append((set_, content, f"{minutes:g} min", label, len(values),
                      f"{statistics.fmean(values):+.4f}", f"{min(values):+.4f}",
                      f"{max(values):+.4f}", f"{std:.4f}", f"s{worst['seed']}"))
    return markdown_table(("set", "content", "budget", "trainer", "seeds", "mean", "min", "max",
                           "std", "worst seed"), table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="embedded", choices=("embedded", "hard"))
    parser.add_argument("--content", default="nucleus")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--peer", type=Path, help="the peer trainer script (skipped when absent)")
    parser.add_argument("--eval-every", type=float, default=120.0,
                        help="seconds between the peer's whole-volume validations")
    parser.add_argument("--fmc", default="", help="extra fmc.train overrides (one string)")
    parser.add_argument("--label", default="defaults", help="name of this fmc configuration")
    parser.add_argument("--members", type=int, default=1,
                        help="an ensemble of this many models sharing the budget (fmc.predict "
                             "ckpt=[...] averages them)")
    parser.add_argument("--skip-fmc", action="store_true", help="run only the peer")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_recipe")
    parser.add_argument("--summary", action="store_true",
                        help="print the table of OUT/results.jsonl and stop")
    parser.add_argument("--spread", action="store_true",
                        help="with --summary: the spread over seeds (mean, min, max, std)")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.summary:
        table = spread_table if args.spread else summary_table
        print(table(out / "results.jsonl"))
        return
    logs = out / "logs"
    raw, h5 = data_set(args.set, args.content, logs)
    overrides = shlex.split(args.fmc)
    print(machine())
    print(f"set={args.set} content={args.content} budget={args.minutes:g} min seeds={args.seeds}"
          f" fmc[{args.label}]: {shlex.join(overrides) or '(defaults)'}", flush=True)
    rows = []
    for seed in args.seeds:
        jobs = []
        if not args.skip_fmc:
            jobs.append(("fmc", lambda s=seed: run_fmc(
                raw, h5, args.content, s, args.minutes, overrides,
                out / args.set / f"fmc_{args.label}_s{s}", members=args.members)))
        if args.peer is not None:
            jobs.append(("peer", lambda s=seed: run_peer(
                args.peer.resolve(), raw, h5, args.content, s, args.minutes, args.eval_every,
                out / args.set / f"peer_s{s}")))
        for _, job in jobs:
            row = {"set": args.set, "content": args.content, "minutes": args.minutes,
                   "seed": seed, "label": args.label if _ == "fmc" else "peer",
                   "overrides": shlex.join(overrides) if _ == "fmc" else "", **job()}
            rows.append(row)
            append_jsonl(out / "results.jsonl", row)
            print(f"{row['label']:>24} seed {seed}: test N_SSIM {row['test_n_ssim']:+.4f} "
                  f"({row['volumes']} volumes, {row['steps']} steps, "
                  f"{row['train_wall_s']:.0f} s)", flush=True)
    means = {}
    for trainer in ("fmc", "peer"):
        values = [r["test_n_ssim"] for r in rows if r["trainer"] == trainer]
        if values:
            means[trainer] = sum(values) / len(values)
            print(f"mean {trainer}: {means[trainer]:+.4f} over {len(values)} seed(s)")
    if len(means) == 2 and means["peer"] > 0:
        print(f"ratio fmc/peer: {means['fmc'] / means['peer']:.2f}")


if __name__ == "__main__":
    main()
