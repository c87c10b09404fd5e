"""Benchmark: training patches per second read from H5 by fmc.data.datamodule.PatchDataset.

Simulates one study-1 pair (default 120×512×512), prepares it as ``fmc.prepare`` does (LZF, the
default, and uncompressed), then loads training patches (default 64×256×256: raw_image +
surface_distance as input, the fused raw_image as target; 75 % foreground, flips and rot90 in YX)
through a DataLoader with 0, 1 and 2 workers. The first batches (worker start-up) are not timed.
The files were just written, so reads come from the page cache: a cold disk is slower.

Usage::

    python scripts/bench_data.py [--shape 120 512 512] [--patch 64 256 256] [--patches 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import dims, machine, table_header, zyx_argument  # noqa: E402

from fmc.data.datamodule import PatchDataset  # noqa: E402
from fmc.preprocessing.conversion import convert_folder  # noqa: E402
from fmc.simulation.synth import write_pair  # noqa: E402

CHANNELS = ["raw_image", "surface_distance"]


def patches_per_second(pairs, patch, count: int, workers: int, warmup: int = 2) -> float:
    """Patches per second over ``count`` patches after ``warmup`` untimed ones."""
    dataset = PatchDataset(pairs, CHANNELS, patch, samples_per_volume=count + warmup,
                           flip_axes="YX", rot90_planes=["YX"] if patch[1] == patch[2] else [])
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for batch in iterator:
        assert batch["input"].shape[1] == len(CHANNELS)
    seconds = time.perf_counter() - start
    dataset.close()
    return (len(dataset) - warmup) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    zyx_argument(parser, "--shape", (120, 512, 512))
    zyx_argument(parser, "--patch", (64, 256, 256))
    parser.add_argument("--patches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    shape, patch = dims(args.shape), dims(args.patch)
    print(f"command: python scripts/bench_data.py --shape {' '.join(map(str, args.shape))} "
          f"--patch {' '.join(map(str, args.patch))} --patches {args.patches}")
    print(machine())
    print(f"volume {shape} (study 1, fmc.synth), patch {patch}, inputs {' + '.join(CHANNELS)} + target, "
          f"chunks 32×64×64, batch 1, {args.patches} timed patches per row\n")
    print(table_header("compression", "workers", "patches/s", "ms/patch"))
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "raw"
        write_pair(raw, 1, "nucleus", 0, shape=tuple(args.shape), scale=1.0)
        for compression in ("lzf", None):
            out = Path(folder) / f"h5_{compression}"
            convert_folder(raw, out, compression=compression, progress=False)
            pairs = [(out / "image_0_nucleus_angle.h5", out / "image_0_nucleus_fused.h5")]
            for workers in args.workers:
                rate = patches_per_second(pairs, tuple(args.patch), args.patches, workers)
                print(f"| {compression or 'none'} | {workers} | {rate:.1f} | {1000 / rate:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
