"""Realism gate of the synthetic generator, measured with the challenge metric (fmc.evaluation.metrics).

For every study × content, at the demo size, at a finer size (the same field of view with
twice the voxels per axis) and at a small size (48×128×128 voxels at the study's native spacing:
a small recording that sees part of a specimen), it generates pairs with default settings (fusion
mode) and prints a markdown table:

* SSIM(view, fused): the challenge's reference SSIM (gate: 0.5-0.9);
* the best isotropic Gaussian blur of the view over a σ sweep (voxels) and its N_SSIM
  (gate: -0.10 to +0.10: on the real data a blur barely helps);
* SSIM(view, fused) on the near and the far half along the degradation axis (each half scored
  on its own with the same metric; for study 3, the near and the far octant), and the largest
  |fused - view| on the near side where the input's blending weight is 1 (0 = target equals
  input there; "-" for a small volume that lies wholly in the blend zone).

Usage::

    .venv/bin/python scripts/synth_realism.py [--pairs 2] [--sizes demo fine small] [--seed 7] \
        [--out docs/synthetic.md]

With ``--out`` the table replaces the block between the realism markers in that file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import dims, table_header, write_marked_block  # noqa: E402

from fmc.core.studies import CONTENTS, STUDIES  # noqa: E402
from fmc.evaluation.metrics import GaussianFilteredVolume, n_ssim_from, ssim_against  # noqa: E402
from fmc.simulation.synth import generate_pair, input_weight  # noqa: E402

SIGMAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SMALL_SHAPE = (48, 128, 128)
BEGIN, END = "<!-- realism:begin -->", "<!-- realism:end -->"


def halves(shape, axes):
    """Near and far box (slices) along the degradation axes."""
    near = [slice(None)] * 3
    far = [slice(None)] * 3
    for axis in axes:
        near[axis] = slice(0, shape[axis] // 2)
        far[axis] = slice(shape[axis] // 2, shape[axis])
    return tuple(near), tuple(far)


def near_identity_error(study, content, index, shape, scale, seed, view, fused) -> int:
    """Largest |fused - view| where the input's blending weight is exactly 1."""
    weight = np.broadcast_to(input_weight(study, content, index, shape, seed, scale), view.shape)
    full = weight == 1
    diff = np.abs(fused.astype(np.int64) - view.astype(np.int64))
    return int(diff[full].max()) if full.any() else -1


def measure(study, content, size, pairs, seed):
    profile = STUDIES[study]
    if size == "demo":
        shape, scale = None, None
    elif size == "fine":  # same field of view, twice the voxels per axis
        shape, scale = tuple(2 * s for s in profile.demo_shape), profile.demo_scale / 2
    else:  # small: a 48x128x128 recording at the study's native spacing (a part of a specimen)
        shape, scale = SMALL_SHAPE, 1.0
    rows = []
    for k in range(pairs):
        view, fused, meta = generate_pair(study, content, k, shape=shape, seed=seed, scale=scale)
        blurred = [GaussianFilteredVolume(view, s) for s in SIGMAS]
        scores = ssim_against(fused, [view, *blurred])
        ssim_input, blur_scores = scores[0], scores[1:]
        n_ssims = [n_ssim_from(s, ssim_input) for s in blur_scores]
        near, far = halves(view.shape, profile.degradation_axis_indices)
        ssim_near = ssim_against(fused[near], [view[near]])[0]
        ssim_far = ssim_against(fused[far], [view[far]])[0]
        error = near_identity_error(study, content, k, shape, scale, seed, view, fused)
        rows.append((view.shape, meta.spacing_zyx, ssim_input, n_ssims, ssim_near, ssim_far, error))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="pairs per study/content/size")
    parser.add_argument("--sizes", nargs="+", default=["demo", "fine", "small"],
                        choices=["demo", "fine", "small"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="markdown file whose realism block to replace")
    args = parser.parse_args()

    lines = [table_header("study", "content", "shape (ZYX)", "spacing µm", "SSIM(view, fused)",
                          "best σ (vox)", "best blur N_SSIM", "N_SSIM σ=0.5", "SSIM near half",
                          "SSIM far half", "max \\|fused−view\\| where w=1")]
    failures = []
    started = time.perf_counter()
    for size in args.sizes:
        for study in STUDIES:
            for content in CONTENTS:
                rows = measure(study, content, size, args.pairs, args.seed)
                shape, spacing = rows[0][0], rows[0][1]
                ssim_input = float(np.mean([r[2] for r in rows]))
                mean_n = np.mean([r[3] for r in rows], axis=0)
                best = int(np.argmax(mean_n))
                near = float(np.mean([r[4] for r in rows]))
                far = float(np.mean([r[5] for r in rows]))
                error = max(r[6] for r in rows)
                line = (f"| {study} | {content} | {dims(shape)} | "
                        f"{'/'.join(f'{s:g}' for s in spacing)} | {ssim_input:.3f} | "
                        f"{SIGMAS[best]:g} | {mean_n[best]:+.3f} | {mean_n[1]:+.3f} | "
                        f"{near:.3f} | {far:.3f} | {error if error >= 0 else '-'} |")
                lines.append(line)
                print(line, flush=True)
                if not 0.5 <= ssim_input <= 0.9:
                    failures.append(f"S{study} {content} {size}: SSIM {ssim_input:.3f}")
                if not -0.10 <= mean_n[best] <= 0.10:
                    failures.append(f"S{study} {content} {size}: best blur {mean_n[best]:+.3f}")
                if not far < near:
                    failures.append(f"S{study} {content} {size}: far half not worse")
                if error > 0:
                    failures.append(f"S{study} {content} {size}: near-side error {error}")
    elapsed = time.perf_counter() - started
    footer = (f"\n{args.pairs} pair(s) per row (seed {args.seed}, indices 0..{args.pairs - 1}), "
              f"means over pairs; σ swept over {list(SIGMAS)} voxels (isotropic in voxels); "
              f"{elapsed:.0f} s. Gate: {'all rows pass' if not failures else 'FAILED: '}"
              f"{'; '.join(failures)}")
    print(footer)
    if args.out:
        command = ("`.venv/bin/python scripts/synth_realism.py " +
                   f"--pairs {args.pairs} --sizes {' '.join(args.sizes)} --seed {args.seed} "
                   f"--out {args.out}`")
        write_marked_block(args.out, BEGIN, END, f"{command}\n\n" + "\n".join(lines) +
                           f"\n{footer}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
