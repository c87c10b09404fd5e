"""Benchmark: prepare one study-1-sized pair, and fmc's hull + distance against RWTH-GE's method.

1. Synthesizes a 222×731×860 study-1 pair (``fmc.synth``, in a child process), then runs the real
   command ``python -m fmc.prepare input=... output=...`` in a child process and reports wall time
   and peak RSS (``ru_maxrss`` of that child, via ``os.wait4``).
2. On the same view, times the hull + signed distance step both ways:
   * RWTH-GE's (docs/references.md, RWTH-GE §1.5-1.6): strided small image ``[::1, ::5, ::5]``, Gaussian σ 1,
     > mean, opening, largest component, shell, ``ConvexHull`` + ``Delaunay.find_simplex`` on
     every voxel of the small grid, SimpleITK ``SignedDanielssonDistanceMap`` (spacing given in
     the right XYZ order here), ``np.repeat`` back to full size;
   * fmc's :func:`fmc.preprocessing.channels.surface_distance`.
   Both hulls are compared (Dice) with an exact full-resolution hull: the same segmentation
   recipe on the full-resolution view (σ 0.5 µm), ``ConvexHull`` of its surface voxels, filled
   exactly from the facet planes.

Needs the benchmark extra (``pip install -e ".[bench]"``: SimpleITK). Usage::

    python scripts/bench_prepare.py [--shape 222 731 860] [--scratch /tmp/fmc-bench-prepare]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import dims, machine, run_measured, run_module, table_header, zyx_argument  # noqa: E402

from fmc.io.tiff import read_volume  # noqa: E402
from fmc.preprocessing.channels import surface_distance  # noqa: E402
from fmc.preprocessing.hull import fill_hull, specimen_hull, specimen_mask  # noqa: E402


def rwth_ge_hull_and_distance(view: np.ndarray, spacing: tuple[float, float, float]):
    """RWTH-GE's surface distance (with its axis-order bug fixed), timed by the caller."""
    import SimpleITK as sitk

    fz, fxy = 1, 5  # study 1's factors in RWTH-GE
    small = view[::fz, ::fxy, ::fxy].astype(np.float32)
    small_spacing = (spacing[0] * fz, spacing[1] * fxy, spacing[2] * fxy)
    smoothed = ndimage.gaussian_filter(small, 1.0, mode="nearest")
    mask = ndimage.binary_opening(smoothed > smoothed.mean())
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    component = labels == np.argmax(sizes)
    shell = component & ~ndimage.binary_erosion(component)
    points = np.argwhere(shell)
    hull = ConvexHull(points)
    triangulation = Delaunay(points[hull.vertices])
    grid = np.indices(small.shape).reshape(3, -1).T  # every voxel index of the small grid
    inside = (triangulation.find_simplex(grid) >= 0).reshape(small.shape)
    image = sitk.GetImageFromArray((1 - inside).astype(np.uint16))
    image.SetSpacing(small_spacing[::-1])  # XYZ, as SimpleITK expects (RWTH-GE passed ZYX)
    distance = sitk.GetArrayFromImage(sitk.SignedDanielssonDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    full = np.repeat(np.repeat(np.repeat(distance, fz, 0), fxy, 1), fxy, 2)
    full = full[:view.shape[0], :view.shape[1], :view.shape[2]].astype(np.float32)
    return full, np.repeat(np.repeat(inside, fxy, 1), fxy, 2)[:, :view.shape[1], :view.shape[2]]


def exact_hull(view: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Full-resolution hull: the segmentation at full resolution, filled exactly."""
    sigma = tuple(0.5 / s for s in spacing)  # 0.5 µm, as fmc's 0.5 coarse voxel at ~1 µm
    mask = specimen_mask(ndimage.gaussian_filter(view.astype(np.float32), sigma), sigma=0.0)
    coordinates = [np.arange(n) * s for n, s in zip(view.shape, spacing, strict=True)]
    return fill_hull(specimen_hull(mask, coordinates), coordinates)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    zyx_argument(parser, "--shape", (222, 731, 860))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fmc-bench-prepare"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timings of the hull step")
    args = parser.parse_args()
    print(machine())
    args.scratch = args.scratch.resolve()
    shutil.rmtree(args.scratch, ignore_errors=True)
    raw = args.scratch / "raw"
    run_module("fmc.synth", f"output={raw}", "study=1", "content=nucleus",
               f"shape=[{','.join(map(str, args.shape))}]",
               f"hydra.run.dir={args.scratch / 'hydra-synth'}", log=args.scratch / "synth.log")
    print(table_header("step", "workers", "wall time", "peak RSS"))
    for workers in args.workers:
        seconds, peak, _ = run_measured(
            [sys.executable, "-m", "fmc.prepare", f"input={raw}",
             f"output={args.scratch / f'h5-{workers}'}", f"workers={workers}", "progress=false",
             f"hydra.run.dir={args.scratch / f'hydra-{workers}'}"])
        print(f"| fmc.prepare, one {dims(args.shape)} pair | {workers} | "
              f"{seconds:.1f} s | {peak:.2f} GB |")

    view, meta = read_volume(raw / "image_0_nucleus_angle.tif")
    spacing = meta.spacing_zyx
    rwth_ge_times, fmc_times = [], []
    for _ in range(args.repeats):  # alternate the two, keep the median of each
        start = time.perf_counter()
        _, rwth_ge_inside = rwth_ge_hull_and_distance(view, spacing)
        rwth_ge_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        fmc_distance = surface_distance(view, spacing)
        fmc_times.append(time.perf_counter() - start)
    rwth_ge_seconds, fmc_seconds = float(np.median(rwth_ge_times)), float(np.median(fmc_times))
    reference = exact_hull(view, spacing)
    print("\n" + table_header(f"hull + signed distance (median of {args.repeats})", "time",
                              "hull Dice vs exact full-resolution hull"))
    print(f"| RWTH-GE (strided grid, Delaunay find_simplex, SimpleITK Danielsson, repeat) | "
          f"{rwth_ge_seconds:.1f} s | {dice(rwth_ge_inside, reference):.4f} |")
    print(f"| fmc (block-mean grid, plane-section hull fill, scipy EDT, linear upsampling) | "
          f"{fmc_seconds:.1f} s | {dice(fmc_distance > 0, reference):.4f} |")
    print(f"\nspeed-up: {rwth_ge_seconds / fmc_seconds:.1f}×")
    shutil.rmtree(args.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
