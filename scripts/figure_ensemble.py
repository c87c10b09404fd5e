"""What averaging does to one volume: each model's prediction and the ensemble's, side by side.

    python scripts/figure_ensemble.py --view ~/.cache/fmc/data/synthetic/image_30_membrane_angle.tif \
        --ckpt A.ckpt B.ckpt C.ckpt --out docs/figures/loso_ensemble_study4_membrane.png

Each checkpoint predicts the view with ``python -m fmc.predict``, then all of them together
(``ckpt=[A,B,C]``, the ensemble); every prediction is scored against the view's fusion
(``*_fused.tif`` next to it) with the challenge's N_SSIM, and the montage shows one block per
prediction (view, prediction, fusion, |prediction - fusion|; XY and XZ max projections) labelled
with its score. Prints the scores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import run_module  # noqa: E402


def predict(ckpt: str, view: Path, out: Path) -> Path:
    """``fmc.predict`` of one view into ``out`` (its output in ``out``.log); the written
    prediction."""
    run_module("fmc.predict", f"ckpt={ckpt}", f"input={view}", f"output={out}", "progress=false",
               "batch_size=4", log=out.with_suffix(".log"))
    return out / view.name


def main() -> None:
    from fmc.evaluation.metrics import score_prediction
    from fmc.evaluation.montage import MontageImage, write_montage
    from fmc.io.tiff import TiffVolume

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", type=Path, required=True)
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--names", nargs="+", help="one per checkpoint (default: model 1, 2, ...)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fused = args.view.with_name(args.view.name.replace("_angle", "_fused"))
    names = args.names or [f"model {i + 1}" for i in range(len(args.ckpt))]
    jobs = list(zip(names, args.ckpt, strict=True))
    jobs.append((f"ensemble (mean of {len(args.ckpt)})", "[" + ",".join(args.ckpt) + "]"))
    images = []
    with tempfile.TemporaryDirectory() as work:
        for index, (name, ckpt) in enumerate(jobs):
            prediction = predict(ckpt, args.view, Path(work) / str(index))
            volumes = [TiffVolume(p) for p in (args.view, fused, prediction)]
            try:
                score = score_prediction(*volumes).n_ssim
            finally:
                for volume in volumes:
                    volume.close()
            print(f"{name}: N_SSIM {score:+.4f}")
            images.append(MontageImage(f"{name}: N_SSIM {score:+.3f}", args.view, prediction,
                                       fused))
        print(write_montage(images, args.out))


if __name__ == "__main__":
    main()
