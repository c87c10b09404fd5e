"""Benchmark: data-loading share of the training step time, CPU demo configuration.

Runs ``python -m fmc.train`` on the embedded synthetic dataset with Lightning's simple profiler
for a fixed number of steps and reports the time spent fetching batches
(``train_dataloader_next``) against the time of the training batches (``run_training_batch``).

Usage::

    python scripts/bench_train.py [--steps 60] [--extra model.residual=true ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import machine, run_measured, table_header  # noqa: E402


def profiled_seconds(report: str, action: str) -> tuple[float, int]:
    """Total seconds and call count of ``action`` in a simple-profiler report."""
    for line in report.splitlines():
        if action in line:
            numbers = re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?|\d+", line.split(action, 1)[1])
            # columns: mean duration, num calls, total time, percentage
            return float(numbers[2]), int(float(numbers[1]))
    raise SystemExit(f"{action} not found in the profiler report:\n{report[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--extra", nargs="*", default=[], help="more fmc.train overrides")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        seconds, peak, output = run_measured(
            [sys.executable, "-m", "fmc.train", "logger=none", f"trainer.max_steps={args.steps}",
             "trainer.enable_progress_bar=false", "trainer.profiler=simple",
             "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
             # Training steps only: no whole-volume validation or test scoring; verbose=true
             # lets Lightning's profiler report through fmc's log filter.
             "callbacks.checkpoint.monitor=val/n_ssim", "test_volumes=false", "verbose=true",
             f"hydra.run.dir={folder}", *args.extra])
    loading, fetches = profiled_seconds(output, "train_dataloader_next")
    stepping, steps = profiled_seconds(output, "run_training_batch")
    print(table_header("configuration", "steps", "loading", "training batches", "loading share",
                       "peak RSS"))
    print(f"| CPU demo defaults {' '.join(args.extra)} | {steps} | {loading:.1f} s | "
          f"{stepping:.1f} s | {100 * loading / (loading + stepping):.1f} % | {peak:.2f} GB |")
    print(f"(whole command {seconds:.0f} s, {fetches} batch fetches)")


if __name__ == "__main__":
    main()
