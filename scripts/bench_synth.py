"""Wall time and peak memory of one full-size synthetic pair (study 1: 222×731×860 voxels).

Usage::

    .venv/bin/python scripts/bench_synth.py [--study 1] [--content nucleus] [--shape 222 731 860]

Generates the pair at the study's native spacing and writes both TIFFs into a temporary folder
(the write is part of the measured time). Peak RSS is the process's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import dims, zyx_argument  # noqa: E402

from fmc.simulation.synth import write_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=int, default=1)
    parser.add_argument("--content", default="nucleus")
    zyx_argument(parser, "--shape", (222, 731, 860))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        paths = write_pair(Path(folder), args.study, args.content, 0, shape=args.shape,
                           seed=args.seed)
        elapsed = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    print(f"study {args.study} {args.content} {dims(args.shape)}: "
          f"{elapsed:.1f} s, peak RSS {peak_gb:.2f} GB, files {size_mb:.0f} MB "
          f"({os.cpu_count()} cores, {platform.python_version()})")


if __name__ == "__main__":
    main()
