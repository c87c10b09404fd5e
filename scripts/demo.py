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
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from fmc.core.locations import embedded_tiff_dir  # noqa: E402

OUT = Path("outputs/demo")


def run(*args: str) -> None:
    """Echo and run ``python -m <args>`` from the repository root; stop the demo if it fails."""
    command = [sys.executable, "-m", *args]
    print(f"\n$ python -m {' '.join(shlex.quote(a) for a in args)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, check=False)
    if result.returncode != 0:
        sys.exit(f"demo: step failed with exit code {result.returncode}")
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per model")
    args = parser.parse_args()
    start = time.perf_counter()
    seconds = int(args.minutes * 60)
    budget = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    sweep = OUT / "sweep"
    shutil.rmtree(REPO / sweep, ignore_errors=True)  # a fresh sweep: no stale checkpoints or scores
    # No input= / raw= given: the commands use the embedded synthetic dataset, synthesized on
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
