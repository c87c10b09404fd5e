"""`make demo`: run fmc's whole chain end to end on the embedded synthetic dataset.

Each step is the real command a user would type, run in a subprocess and echoed, so the demo shows
how to use fmc: synthesize the default dataset (once) and prepare it for training (H5 files with
the auxiliary channels, split lists); train a small sweep of two models (nucleus and membrane, all
studies pooled) for a few minutes each on the CPU (patch-level validation N_SSIM, W&B offline);
then ``fmc.report`` predicts each model's test split, scores it with the challenge's N_SSIM next to
the identity and Gaussian baselines, and writes the table and figures.

    python scripts/demo.py [--minutes 4]
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import REPO, max_time, run_module  # noqa: E402

from fmc.core.locations import embedded_tiff_dir  # noqa: E402

OUT = Path("outputs/demo")


def run(*args: str) -> None:
    """Echo and run ``python -m <args>`` from the repository root; stop the demo if it fails."""
    print(f"\n$ python -m {shlex.join(args)}", flush=True)
    print(f"({run_module(*args):.0f} s)", flush=True)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per model")
    args = parser.parse_args()
    start = time.perf_counter()
    budget = max_time(int(args.minutes * 60))
    sweep = OUT / "sweep"
    shutil.rmtree(REPO / sweep, ignore_errors=True)  # a fresh sweep: no stale checkpoints or scores
    # No input= given: the commands use the embedded synthetic dataset, synthesized on
    # first use into $FMC_DATA (default ~/.cache/fmc/data), whatever the current folder.
    print(f"embedded dataset: {embedded_tiff_dir()} (set FMC_DATA to move it)", flush=True)
    run("fmc.prepare", "workers=2", "progress=false")
    run("fmc.train", "--multirun", "content=nucleus,membrane", f"trainer.max_time={budget}",
        "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}")
    run("fmc.report", f"sweep={sweep}", "predict_overrides=['batch_size=4']")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s: table {sweep / 'report.md'}, "
          f"figures {sweep / 'report_nssim.png'} and {sweep / 'report_montage.png'}")


if __name__ == "__main__":
    main()
