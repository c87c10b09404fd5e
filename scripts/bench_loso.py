"""Do no harm on unseen studies: the leave-one-study-out benchmark on the embedded dataset.

    python scripts/bench_loso.py --label base --seeds 0
    python scripts/bench_loso.py --label head --seeds 0 --fmc "model.confidence=head"
    python scripts/bench_loso.py --rescore base --fallbacks difference calibrated
    python scripts/bench_loso.py --rescore ema --tta y x --seeds 0 1 2
    python scripts/bench_loso.py --summary [--overview] [--labels base head lateral@basicunet ...]
    python scripts/bench_loso.py --figure head+calibrated docs/figures/loso_defaults.png

For each content (nucleus, membrane) and seed, one after the other on the same cores:

* the **in-domain reference**: ``python -m fmc.train study=all`` -- trained on every study,
  tested on each study's test list (``test/volumes`` in its ``metrics.json``);
* **leave one study out**: ``python -m fmc.train holdout=K`` for K = 1..5 -- trained and
  selected on the other studies, tested on all of study K's volumes.

Each run trains ``--steps`` optimizer steps (about 2 minutes on 2 cores with the CPU profile),
whole-volume validation every ``--steps``/4 steps, with the fmc defaults plus ``--fmc``: a fixed
amount of compute, so that variants compare fairly even when the machine is shared (a time
budget would give a loaded machine fewer steps). Its end-of-training test scores (the
challenge's N_SSIM on whole volumes, with the output the checkpoint's settings give) are appended
to ``OUT/results.jsonl``.
``--rescore LABEL`` scores the same checkpoints again in-process with other ``fallback``
settings (rows labelled ``LABEL+fallback``). ``--summary`` prints the table of
docs/benchmarks.md: per held-out study, the LOSO mean over its volumes, the worst volume, and the
in-domain reference's mean on the same study's test volumes.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import (  # noqa: E402
    REPO,
    append_jsonl,
    machine,
    markdown_table,
    read_jsonl,
    run_module,
    table_header,
    table_row,
)

from fmc.core.locations import embedded_h5_dir  # noqa: E402
from fmc.core.studies import CONTENTS, EMBEDDED_STUDIES  # noqa: E402
from fmc.reporting.loso import HARM_LIMIT, HeldOutScores, loso_rows  # noqa: E402

RESULTS = "results.jsonl"


def train(out: Path, overrides: list[str], log: Path) -> dict:
    """One ``fmc.train`` run into ``out``; its metrics.json."""
    seconds = run_module("fmc.train", "logger=none", "trainer.enable_progress_bar=false",
                         f"hydra.run.dir={out}", *overrides, log=log)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_s"] = round(seconds, 1)
    return metrics


def run_label(args) -> None:
    overrides = shlex.split(args.fmc)
    for seed in args.seeds:
        for content in args.contents:
            jobs = [] if args.skip_reference else [("reference", None)]
            jobs += [(f"holdout{k}", k) for k in args.holdouts]
            for name, holdout in jobs:
                folder = args.out / args.label / f"seed{seed}" / f"{name}_{content}"
                # trainer.max_time=null: a loaded machine must not cut a run short (profile=cpu
                # caps a run at 10 minutes), or runs would differ in steps, not in recipe.
                extra = [f"content={content}", f"seed={seed}", f"trainer.max_steps={args.steps}",
                         "trainer.max_time=null",
                         f"callbacks.volume_validation.every_n_steps={max(1, args.steps // 4)}",
                         "callbacks.volume_validation.every_minutes=null"]
                if holdout is not None:
                    extra.append(f"holdout={holdout}")
                metrics = train(folder, extra + overrides, folder.with_suffix(".log"))
                row = {"label": args.label, "seed": seed, "content": content,
                       "holdout": holdout, "run": str(folder), "overrides": args.fmc,
                       "max_steps": args.steps, "machine": machine(),
                       "fallback": "checkpoint", "test_n_ssim": metrics.get("test/n_ssim"),
                       "volumes": metrics.get("test/volumes") or {},
                       "steps": metrics.get("global_step"), "wall_s": metrics["wall_s"],
                       "checkpoint": metrics.get("best/checkpoint")
                       or metrics.get("last_checkpoint")}
                append_jsonl(args.out / RESULTS, row)
                print(f"{args.label} seed {seed} {name} {content}: test N_SSIM "
                      f"{row['test_n_ssim']:+.4f} ({row['steps']} steps, {row['wall_s']} s)",
                      flush=True)


def rescore_tta(args) -> None:
    """Score the checkpoints of ``--rescore LABEL`` again with flip test-time augmentation over
    ``--tta`` axes (rows ``LABEL+tta``), each checkpoint's own fallback as ``fmc.predict`` applies
    it; the same volumes are also predicted without TTA in the same process, so that
    ``seconds / seconds_plain`` is the cost of TTA on this machine whatever its load."""
    import time

    from fmc.evaluation.volume_scoring import score_h5_pairs, scoring_settings
    from fmc.models.checkpoint import load_fusion_module
    from fmc.preprocessing.splits import read_list

    h5 = embedded_h5_dir()
    plain = scoring_settings(0.5, 4)
    flipped = replace(plain, tta=tuple(args.tta)).check()
    rows = [r for r in read_rows(args.out) if r["label"] == args.rescore
            and r["fallback"] == "checkpoint" and r["seed"] in args.seeds]
    for row in rows:
        model = load_fusion_module(row["checkpoint"], "cpu")
        prefix = "all" if row["holdout"] is None else f"holdout{row['holdout']}"
        pairs = read_list(h5 / "lists" / f"{prefix}_{row['content']}_test.csv", h5)
        seconds = {}
        for name, settings in (("seconds_plain", plain), ("seconds", flipped)):
            start = time.perf_counter()
            scores = score_h5_pairs(model, pairs, settings)
            seconds[name] = round(time.perf_counter() - start, 2)
        new = dict(row, label=f"{args.rescore}+tta", tta=list(args.tta), **seconds,
                   volumes={s.name: s.n_ssim for s in scores},
                   test_n_ssim=float(np.mean([s.n_ssim for s in scores])))
        append_jsonl(args.out / RESULTS, new)
        print(f"{new['label']} seed {row['seed']} holdout {row['holdout']} {row['content']}: "
              f"{new['test_n_ssim']:+.4f} (was {row['test_n_ssim']:+.4f}; "
              f"{seconds['seconds']} s vs {seconds['seconds_plain']} s)", flush=True)


def rescore(args) -> None:
    """Score the checkpoints of ``--rescore LABEL`` again with each of ``--fallbacks``."""
    from fmc.evaluation.volume_scoring import calibrate_change_limit_on, score_h5_pairs, scoring_settings
    from fmc.models.checkpoint import load_fusion_module
    from fmc.preprocessing.splits import read_list

    h5 = embedded_h5_dir()
    rows = [r for r in read_rows(args.out) if r["label"] == args.rescore
            and r["fallback"] == "checkpoint"]
    for row in rows:
        model = load_fusion_module(row["checkpoint"], "cpu")
        prefix = "all" if row["holdout"] is None else f"holdout{row['holdout']}"
        pairs = read_list(h5 / "lists" / f"{prefix}_{row['content']}_test.csv", h5)
        if "calibrated" in args.fallbacks and model.hparams.get("change_limit") is None:
            # As fmc.train does with model.fallback=calibrated: the run's validation volumes.
            val = read_list(h5 / "lists" / f"{prefix}_{row['content']}_val.csv", h5)
            model.hparams["change_limit"] = calibrate_change_limit_on(model, val, scoring_settings(0.5, 4))
        for fallback in args.fallbacks:
            scores = score_h5_pairs(model, pairs, scoring_settings(0.5, 4, fallback))
            new = dict(row, label=f"{args.rescore}+{fallback}", fallback=fallback,
                       volumes={s.name: s.n_ssim for s in scores},
                       test_n_ssim=float(np.mean([s.n_ssim for s in scores])))
            append_jsonl(args.out / RESULTS, new)
            print(f"{new['label']} seed {row['seed']} holdout {row['holdout']} {row['content']}: "
                  f"{new['test_n_ssim']:+.4f}", flush=True)


def read_rows(out: Path) -> list[dict]:
    """The rows of ``OUT/results.jsonl`` (none before the first run)."""
    return read_jsonl(out / RESULTS)


def study_of(name: str, h5: Path) -> int | None:
    from fmc.io.h5 import read_attrs

    path = h5 / name.replace("_angle.h5", "_fused.h5")
    study = read_attrs(path).get("study") if path.is_file() else None
    return None if study is None else int(study)


def summary(out: Path, labels: list[str] | None) -> str:
    """Markdown: per label and content, per held-out study: LOSO mean, worst, in-domain ref.

    The held-out statistics are fmc.report's (:func:`fmc.reporting.loso.loso_rows`: a study's
    volumes pooled over seeds; **all**: the mean of the studies' means, the worst volume).
    """
    h5 = embedded_h5_dir()
    rows = read_rows(out)
    labels = labels or list(dict.fromkeys(r["label"] for r in rows))
    lines = [table_header("variant", "content", "held-out study", "LOSO mean", "worst volume",
                          "in-domain ref", "LOSO / ref", "seeds")]
    verdicts = []
    for shown in labels:
        # "LABEL@REF": LABEL's held-out runs against REF's in-domain reference runs (a variant
        # that changes only the held-out runs, e.g. holdout-only augmentation).
        label, _, reference = shown.partition("@")
        for content in CONTENTS:
            chosen = [r for r in rows if r["label"] == label and r["content"] == content]
            # The reference comes from the base label's own reference runs (same checkpoint).
            base = reference or label.split("+")[0]
            refs = [r for r in rows if r["label"] in (label, base) and r["content"] == content
                    and r["holdout"] is None and r["fallback"] in ("checkpoint",
                                                                    label.partition("+")[2])]
            refs = [r for r in refs if r["label"] == (reference or label)] or refs
            held = [r for r in chosen if r["holdout"] is not None]
            if not held:
                continue
            seeds = Counter(int(r["holdout"]) for r in held)
            scores = [HeldOutScores(content, int(r["holdout"]), r.get("run", ""), r["volumes"])
                      for r in held]
            *studies, overall = loso_rows(scores)  # one content: its studies, then "all"
            ratios = []
            for row in studies:
                study = int(row["held_out"])
                ref, ratio = _reference_and_ratio(row["mean"], refs, study, h5)
                ratios.append(ratio)
                lines.append(table_row(shown, content, study, f"{row['mean']:+.4f}",
                                       f"{row['worst']:+.4f}", f"{ref:+.4f}", f"{ratio:.2f}",
                                       seeds[study]))
            in_domain = [float(np.mean(list(r["volumes"].values()))) for r in refs]
            in_domain_mean = np.mean(in_domain) if in_domain else math.nan
            # The seeds cell of the **all** row stays empty (one space, as docs/benchmarks.md has it).
            lines.append(table_row(shown, content, "**all**", f"{overall['mean']:+.4f}",
                                   f"{overall['worst']:+.4f}", f"{in_domain_mean:+.4f}",
                                   f"{np.nanmin(ratios) if ratios else math.nan:.2f} (min)")
                         + " |")
            verdicts.append((shown, content, min(ratios, default=math.nan) >= 0.5,
                             overall["harmed"] == 0))
    lines.append("")
    for label, content, half, harmless in verdicts:
        lines.append(f"- {label} {content}: every held-out study >= half of in-domain: "
                     f"{'yes' if half else 'no'}; no volume < {HARM_LIMIT}: "
                     f"{'yes' if harmless else 'no'}")
    return "\n".join(lines)


def seed_spread(out: Path, labels: list[str] | None) -> str:
    """Markdown: per label, content and held-out study, each seed's held-out mean (and its ratio
    to the same seed's in-domain score of that study), their min, max and standard deviation,
    and the worst seed; then per label and content whether the *worst seed* meets the goal
    (every held-out study >= half of in-domain, no volume below the harm limit)."""
    h5 = embedded_h5_dir()
    rows = read_rows(out)
    labels = labels or list(dict.fromkeys(r["label"] for r in rows))
    lines = [table_header("variant", "content", "held-out study", "per seed: mean (ratio)",
                          "min", "max", "std", "worst seed's ratio", "worst volume")]
    verdicts = []
    for label in labels:
        base = label.split("+")[0]
        for content in CONTENTS:
            held = [r for r in rows if r["label"] == label and r["content"] == content
                    and r["holdout"] is not None]
            refs = {r["seed"]: r for r in rows if r["label"] in (label, base)
                    and r["content"] == content and r["holdout"] is None
                    and r["fallback"] in ("checkpoint", label.partition("+")[2])}
            if not held:
                continue
            worst_ratio, worst_volume = math.inf, math.inf
            for study in sorted({int(r["holdout"]) for r in held}):
                per_seed = sorted((r for r in held if int(r["holdout"]) == study),
                                  key=lambda r: r["seed"])
                means = [float(np.mean(list(r["volumes"].values()))) for r in per_seed]
                ratios = [_reference_and_ratio(m, [refs[r["seed"]]] if r["seed"] in refs else [],
                                               study, h5)[1]
                          for m, r in zip(means, per_seed, strict=True)]
                lowest = min(min(r["volumes"].values()) for r in per_seed)
                seed_ratio = min(ratios) if ratios else math.nan
                worst_ratio = min(worst_ratio, seed_ratio)
                worst_volume = min(worst_volume, lowest)
                cells = ", ".join(f"s{r['seed']} {m:+.3f} ({q:.2f})"
                                  for r, m, q in zip(per_seed, means, ratios, strict=True))
                lines.append(table_row(label, content, study, cells, f"{min(means):+.4f}",
                                       f"{max(means):+.4f}",
                                       f"{np.std(means, ddof=1) if len(means) > 1 else 0:.4f}",
                                       f"{seed_ratio:.2f}", f"{lowest:+.4f}"))
            verdicts.append((label, content, worst_ratio, worst_volume))
    lines.append("")
    for label, content, ratio, volume in verdicts:
        lines.append(f"- {label} {content}: worst seed's lowest held-out / in-domain {ratio:.2f} "
                     f"({'>=' if ratio >= 0.5 else '<'} 0.5); worst volume of any seed "
                     f"{volume:+.4f} ({'>=' if volume >= HARM_LIMIT else '<'} {HARM_LIMIT})")
    return "\n".join(lines)


def _reference_and_ratio(mean: float, references: list[dict], study: int, h5: Path
                         ) -> tuple[float, float]:
    """The reference runs' in-domain score on ``study``'s volumes (pooled) and ``mean`` over it
    (NaN for both without such volumes; the ratio NaN for a reference <= 0)."""
    values = [v for r in references for name, v in r["volumes"].items()
              if study_of(name, h5) == study]
    ref = float(np.mean(values)) if values else math.nan
    return ref, (mean / ref if values and ref > 0 else math.nan)


def overview(out: Path, labels: list[str] | None) -> str:
    """One row per variant and content: the **all** rows of :func:`summary`, side by side."""
    rows = [line for line in summary(out, labels).splitlines() if "| **all** |" in line]
    titles = ("variant", "content", "LOSO mean", "worst volume", "in-domain (study=all)",
              "min LOSO / in-domain")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return markdown_table(titles, [(c[0], c[1], c[3], c[4], c[5], c[6].replace(" (min)", ""))
                                   for c in cells])


def figure(out: Path, label: str, path: Path) -> Path:
    """The leave-one-study-out bar chart of ``label`` (fmc.report's, from results.jsonl)."""
    from fmc.reporting.loso import HeldOutScores, loso_rows, write_loso_figure

    scores = [HeldOutScores(r["content"], int(r["holdout"]), Path(r["run"]).name, r["volumes"])
              for r in read_rows(out) if r["label"] == label and r["holdout"] is not None]
    if not scores:
        raise SystemExit(f"no leave-one-study-out rows labelled {label!r}")
    return write_loso_figure(loso_rows(scores), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="base")
    parser.add_argument("--fmc", default="", help="extra fmc.train overrides (one string)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contents", nargs="+", default=list(CONTENTS))
    parser.add_argument("--holdouts", type=int, nargs="+", default=list(EMBEDDED_STUDIES))
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--rescore", metavar="LABEL")
    parser.add_argument("--fallbacks", nargs="+", default=["difference", "calibrated"])
    parser.add_argument("--tta", nargs="+", metavar="AXIS",
                        help="with --rescore: flip test-time augmentation over these axes "
                             "(rows LABEL+tta, with the time of TTA and of the plain prediction)")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--labels", nargs="*", help="with --summary: these labels only; "
                        "LABEL@REF scores LABEL's held-out runs against REF's in-domain runs")
    parser.add_argument("--spread", action="store_true",
                        help="with --summary: the spread over seeds (each seed against its own "
                             "in-domain reference) and the worst seed's verdict")
    parser.add_argument("--overview", action="store_true",
                        help="with --summary: one row per variant and content")
    parser.add_argument("--figure", nargs=2, metavar=("LABEL", "PNG"),
                        help="write the leave-one-study-out bar chart of LABEL")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_loso")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.figure:
        print(figure(args.out, args.figure[0], Path(args.figure[1])))
    elif args.summary:
        if args.spread:
            print(seed_spread(args.out, args.labels))
        else:
            print(overview(args.out, args.labels) if args.overview
                  else summary(args.out, args.labels))
    elif args.rescore:
        rescore_tta(args) if args.tta else rescore(args)
    else:
        run_label(args)


if __name__ == "__main__":
    main()
