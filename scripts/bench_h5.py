"""Benchmark: HDF5 chunking and compression for training-patch reads (fmc.io.h5's choice).

Writes a percentile-normalised synthetic view and its surface distance (float32, as
``fmc.prepare`` stores them) with chunks 32×64×64 uncompressed, LZF and gzip-4, then reads random
training patches. Reports write time, file size and mean patch-read time.

Usage::

    python scripts/bench_h5.py [--shape 80 256 256] [--patch 32 128 128] [--reads 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import dims, table_header, zyx_argument  # noqa: E402

from fmc.core.normalization import volume_stats  # noqa: E402
from fmc.preprocessing.channels import surface_distance  # noqa: E402
from fmc.preprocessing.conversion import normalize_float32  # noqa: E402
from fmc.simulation.synth import generate_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    zyx_argument(parser, "--shape", (80, 256, 256))
    zyx_argument(parser, "--patch", (32, 128, 128))
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    view, _, meta = generate_pair(1, "nucleus", shape=tuple(args.shape), scale=1.5)
    stats = volume_stats(view)
    datasets = {"raw_image": normalize_float32(view, stats.low, stats.high),
                "surface_distance": surface_distance(view, meta.spacing_zyx)}
    rng = np.random.default_rng(0)
    patch = np.array(args.patch)
    starts = [rng.integers(0, np.array(args.shape) - patch + 1) for _ in range(args.reads)]
    print(f"volume {dims(args.shape)} float32 × 2 datasets, chunks 32×64×64, "
          f"patch {dims(args.patch)}, {args.reads} random reads per dataset; "
          f"{os.cpu_count()} cores")
    print(table_header("compression", "write", "file size", "patch read (both datasets)"))
    with tempfile.TemporaryDirectory() as folder:
        for name, options in [("none", {}), ("lzf", {"compression": "lzf"}),
                              ("gzip-4", {"compression": "gzip", "compression_opts": 4})]:
            path = Path(folder) / f"{name}.h5"
            start = time.perf_counter()
            with h5py.File(path, "w") as handle:
                for key, array in datasets.items():
                    handle.create_dataset(key, data=array, chunks=(32, 64, 64), **options)
            write = time.perf_counter() - start
            start = time.perf_counter()
            with h5py.File(path, "r") as handle:
                for begin in starts:
                    window = tuple(slice(b, b + p) for b, p in zip(begin, patch, strict=True))
                    for key in datasets:
                        handle[key][window]
            read = (time.perf_counter() - start) / len(starts)
            print(f"| {name} | {write:.2f} s | {path.stat().st_size / 1e6:.0f} MB | "
                  f"{read * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
