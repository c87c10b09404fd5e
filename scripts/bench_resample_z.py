"""Does predicting on a finer Z grid help a study whose planes are coarser than the training data?

    python scripts/bench_resample_z.py --label head --holdout 4 --factor 2

For each leave-one-study-out checkpoint of ``--label`` (rows of scripts/bench_loso.py's
``results.jsonl``) and each volume of the held-out study: predict it as it is, and predict it
resampled to ``--factor`` × more planes (linear interpolation, the H5's spacing divided
accordingly, the checkpoint's own fallback), sampled back onto the original planes; both scored
with the challenge's N_SSIM against the fusion. Study 4's planes are 2× coarser than the other
studies' (docs/synthetic.md), so a factor of 2 shows it the Z step it was trained on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import REPO, read_jsonl, table_header  # noqa: E402

from fmc.core.locations import embedded_h5_dir  # noqa: E402


def zoom_back(prediction: np.ndarray, planes: int) -> np.ndarray:
    """``prediction`` (fine planes) sampled at the original ``planes`` (same end points)."""
    positions = np.arange(planes) * (prediction.shape[0] - 1) / max(planes - 1, 1)
    grid = np.meshgrid(positions, np.arange(prediction.shape[1]), np.arange(prediction.shape[2]),
                       indexing="ij")
    return ndimage.map_coordinates(prediction, grid, order=1)


def main() -> None:
    import h5py

    from fmc.evaluation.metrics import n_ssim
    from fmc.evaluation.volume_scoring import scoring_settings
    from fmc.inference.volume_prediction import predict_volume
    from fmc.io.h5 import RAW_IMAGE, read_attrs, write_h5
    from fmc.models.checkpoint import load_fusion_module

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="head")
    parser.add_argument("--holdout", type=int, default=4)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--results", type=Path,
                        default=REPO / "docs" / "data" / "bench_loso_results.jsonl")
    parser.add_argument("--h5", type=Path, default=embedded_h5_dir())
    args = parser.parse_args()
    rows = [r for r in read_jsonl(args.results)
            if r["label"] == args.label and r["holdout"] == args.holdout]
    print(table_header("content", "volume", "as is", f"Z × {args.factor:g}"))
    settings = scoring_settings(0.5, 2)  # fmc.predict's window, as training's validation
    with tempfile.TemporaryDirectory() as scratch:
        for row in rows:
            model = load_fusion_module(row["checkpoint"])
            native, fine = [], []
            for name in row["volumes"]:
                angle = args.h5 / name
                with h5py.File(angle) as f_angle, h5py.File(str(angle).replace("_angle", "_fused")) \
                        as f_fused:
                    view, target = f_angle[RAW_IMAGE][:], f_fused[RAW_IMAGE][:]
                attrs = read_attrs(angle)
                up = ndimage.zoom(view, (args.factor, 1, 1), order=1)
                spacing = list(attrs["spacing_zyx"])
                spacing[0] *= (view.shape[0] - 1) / (up.shape[0] - 1)
                attrs = {k: v for k, v in attrs.items() if k != "fmc_complete"}
                attrs.update(spacing_zyx=spacing, shape=list(up.shape))
                path = write_h5(Path(scratch) / name, {RAW_IMAGE: up}, attrs)
                as_is = n_ssim(predict_volume(model, angle, settings), target, view)
                resampled = n_ssim(zoom_back(predict_volume(model, path, settings), view.shape[0]),
                                   target, view)
                native.append(as_is)
                fine.append(resampled)
                print(f"| {row['content']} | {name} | {as_is:+.4f} | {resampled:+.4f} |", flush=True)
            print(f"| {row['content']} | **mean** | {np.mean(native):+.4f} | {np.mean(fine):+.4f} |")


if __name__ == "__main__":
    main()
