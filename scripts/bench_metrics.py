"""Benchmark: score one study-5-sized pair (309×1920×1920 uint16) with fmc's chunked metric.

Writes a synthetic view, fused target and float32 prediction of the challenge's largest study to a
scratch folder (TIFFs as the challenge writes them), then runs the real command
``python -m fmc.evaluate input=... prediction=... baseline=identity`` in a child process and reports its
wall time and peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``). A second,
smaller pair that fits in memory compares fmc's chunked SSIM with a whole-volume scikit-image
call (value and time).

Usage::

    python scripts/bench_metrics.py [--shape 309 1920 1920] [--scratch /tmp/fmc-bench]

The numbers go into docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import (  # noqa: E402
    BLOCK,
    degraded,
    dims,
    machine,
    phantom,
    run_logged,
    run_measured,
    study_meta,
    table_header,
    zyx_argument,
)

from fmc.io.tiff import write_volume  # noqa: E402

STUDY5 = study_meta(5)


def write_pair(folder: Path, shape: tuple[int, int, int]) -> None:
    raw, pred = folder / "raw", folder / "pred"
    fused = phantom(shape, 1)
    write_volume(raw / "image_0_nucleus_fused.tif", fused, STUDY5)
    view = degraded(fused, 2)
    write_volume(raw / "image_0_nucleus_angle.tif", view, STUDY5)
    prediction = view.astype(np.float32)  # halfway between view and target
    for z0 in range(0, shape[0], BLOCK):
        prediction[z0:z0 + BLOCK] += fused[z0:z0 + BLOCK]
    prediction *= 0.5
    del fused, view
    write_volume(pred / "image_0_nucleus_angle.tif", prediction, STUDY5)


def run_evaluate(folder: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and stdout of fmc.evaluate on the scratch pair."""
    return run_measured(
        [sys.executable, "-m", "fmc.evaluate", f"input={folder / 'raw'}",
         f"prediction={folder / 'pred'}", f"output={folder / 'out'}", "baseline=identity", "progress=false",
         f"hydra.run.dir={folder / 'hydra'}"])


def compare_with_skimage(shape: tuple[int, int, int]) -> None:
    from skimage.metrics import structural_similarity

    from fmc.core.normalization import percentile_normalize
    from fmc.evaluation.metrics import ssim

    target = phantom(shape, 3)
    view = degraded(target, 4)
    start = time.perf_counter()
    chunked = ssim(view, target)
    chunked_seconds = time.perf_counter() - start
    start = time.perf_counter()
    v, t = percentile_normalize(view), percentile_normalize(target)
    whole = structural_similarity(t, v, data_range=max(np.ptp(v), np.ptp(t)))
    whole_seconds = time.perf_counter() - start
    print(f"| {dims(shape)} | {chunked:.9f} | {whole:.9f} | "
          f"{abs(chunked - whole):.1e} | {chunked_seconds:.1f} s | {whole_seconds:.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    zyx_argument(parser, "--shape", (309, 1920, 1920))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fmc-bench-metrics"))
    zyx_argument(parser, "--small", (64, 512, 512))
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape, args.scratch = tuple(args.shape), args.scratch.resolve()
    if args.write_only:  # the child that writes the volumes, so the parent stays small
        write_pair(args.scratch, shape)
        return
    print(machine())
    shutil.rmtree(args.scratch, ignore_errors=True)
    seconds = run_logged([sys.executable, str(Path(__file__).resolve()), "--write-only",
                          "--scratch", str(args.scratch), "--shape", *map(str, shape)])
    print(f"wrote the {dims(shape)} pair + float32 prediction in {seconds:.0f} s")
    seconds, peak_gb, stdout = run_evaluate(args.scratch)
    print(stdout)
    print(table_header("volume", "command", "wall time", "peak RSS"))
    print(f"| {dims(shape)} uint16 view + fused, float32 prediction | "
          f"fmc.evaluate prediction=... baseline=identity | {seconds:.0f} s | {peak_gb:.2f} GB |")
    print("\n" + table_header("shape", "fmc chunked SSIM", "skimage whole volume", "difference",
                              "fmc time", "skimage time"))
    compare_with_skimage(tuple(args.small))
    if not args.keep:
        shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
