"""Benchmark: score one study-5-sized pair (309×1920×1920 uint16) with fmc's chunked metric.

Writes a synthetic view, fused target and float32 prediction of the challenge's largest study to a
scratch folder (TIFFs as the challenge writes them), then runs the real command
``python -m fmc.evaluate raw=... pred=... baseline=identity`` in a child process and reports its
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
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchtools import machine, run_measured
from scipy import ndimage

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume

STUDY5 = VolumeMeta(study=5, content="nucleus", spacing_zyx=(1.01, 0.388, 0.388))


def blobs(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A cheap, structured uint16 volume: smoothed noise, built plane block by plane block."""
    rng = np.random.default_rng(seed)
    volume = np.empty(shape, np.uint16)
    for z0 in range(0, shape[0], 16):
        z1 = min(z0 + 16, shape[0])
        block = ndimage.uniform_filter(rng.random((z1 - z0, *shape[1:]), dtype=np.float32), 5)
        volume[z0:z1] = (block * 2000 + 100).astype(np.uint16)
    return volume


def write_pair(folder: Path, shape: tuple[int, int, int]) -> None:
    raw, pred = folder / "raw", folder / "pred"
    fused = blobs(shape, 1)
    write_volume(raw / "image_0_nucleus_fused.tif", fused, STUDY5)
    rng = np.random.default_rng(2)
    view = fused.copy()
    for z0 in range(0, shape[0], 16):  # a noisier, dimmer copy
        noise = rng.normal(0, 30, view[z0:z0 + 16].shape).astype(np.float32)
        view[z0:z0 + 16] = np.clip(fused[z0:z0 + 16] * 0.8 + noise, 0, 65535).astype(np.uint16)
    write_volume(raw / "image_0_nucleus_angle.tif", view, STUDY5)
    prediction = view.astype(np.float32)  # halfway between view and target
    for z0 in range(0, shape[0], 16):
        prediction[z0:z0 + 16] += fused[z0:z0 + 16]
    prediction *= 0.5
    del fused, view
    write_volume(pred / "image_0_nucleus_angle.tif", prediction, STUDY5)


def run_evaluate(folder: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and stdout of fmc.evaluate on the scratch pair."""
    return run_measured(
        [sys.executable, "-m", "fmc.evaluate", f"raw={folder / 'raw'}", f"pred={folder / 'pred'}",
         f"out={folder / 'out'}", "baseline=identity", "progress=false",
         f"hydra.run.dir={folder / 'hydra'}"])


def compare_with_skimage(shape: tuple[int, int, int]) -> None:
    from skimage.metrics import structural_similarity

    from fmc.core.normalization import percentile_normalize
    from fmc.evaluation.metrics import ssim

    target = blobs(shape, 3)
    view = np.clip(target * 0.8 + np.random.default_rng(4).normal(0, 30, shape), 0,
                   65535).astype(np.uint16)
    start = time.perf_counter()
    chunked = ssim(view, target)
    chunked_seconds = time.perf_counter() - start
    start = time.perf_counter()
    v, t = percentile_normalize(view), percentile_normalize(target)
    whole = structural_similarity(t, v, data_range=max(np.ptp(v), np.ptp(t)))
    whole_seconds = time.perf_counter() - start
    print(f"| {'×'.join(map(str, shape))} | {chunked:.9f} | {whole:.9f} | "
          f"{abs(chunked - whole):.1e} | {chunked_seconds:.1f} s | {whole_seconds:.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[309, 1920, 1920])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fmc-bench-metrics"))
    parser.add_argument("--small", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    if args.write_only:  # the child that writes the volumes, so the parent stays small
        write_pair(args.scratch, shape)
        return
    print(machine())
    shutil.rmtree(args.scratch, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--write-only", "--scratch", str(args.scratch),
                    "--shape", *map(str, shape)], check=True)
    print(f"wrote the {'×'.join(map(str, shape))} pair + float32 prediction in "
          f"{time.perf_counter() - start:.0f} s")
    seconds, peak_gb, stdout = run_evaluate(args.scratch)
    print(stdout)
    print("| volume | command | wall time | peak RSS |\n|---|---|---|---|")
    print(f"| {'×'.join(map(str, shape))} uint16 view + fused, float32 prediction | "
          f"fmc.evaluate pred=... baseline=identity | {seconds:.0f} s | {peak_gb:.2f} GB |")
    print("\n| shape | fmc chunked SSIM | skimage whole volume | difference | fmc time | "
          "skimage time |\n|---|---|---|---|---|---|")
    compare_with_skimage(tuple(args.small))
    if not args.keep:
        shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
