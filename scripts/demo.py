"""`make demo`: run fmc's main job end to end on the embedded synthetic dataset.

Each step is the real command a user would type, run in a subprocess and echoed, so the demo shows
how to use fmc. Today: synthesize the default dataset (once), prepare it for training (H5 files
with the auxiliary channels, split lists), train a small nucleus model for a few minutes on the CPU
(patch-level validation N_SSIM; W&B offline), predict the nucleus test split with the best
checkpoint, and score it next to the identity and Gaussian baselines with the challenge's N_SSIM.
The sweep report joins when it exists.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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
    start = time.perf_counter()
    # No input= / raw= given: the commands use the embedded synthetic dataset (data/synthetic),
    # synthesized on first use.
    run("fmc.prepare", "workers=2", "progress=false")
    run("fmc.train", "content=nucleus", "trainer.max_time=00:00:03:00",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={OUT / 'train'}")
    test_list = Path("data/synthetic_h5/lists/all_nucleus_test.csv")
    best = sorted((OUT / "train" / "checkpoints").glob("epoch*.ckpt"),
                  key=lambda p: p.stat().st_mtime)[-1]
    # A split list is a valid input: its angle files (prepared H5) are predicted and the outputs
    # take the original TIFF names, which evaluate pairs with the raw data.
    run("fmc.predict", f"ckpt={best}", f"input={test_list}", f"output={OUT / 'predictions'}",
        "progress=false")
    run("fmc.evaluate", f"pred={OUT / 'predictions'}", f"split_list={test_list}",
        "baseline=[identity,gaussian]", "sigma=sweep", "sigma_sweep=[0.25,0.5,0.75,1.0]", "table=content",
        f"out={OUT / 'scores'}", "progress=false")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; scores in {OUT / 'scores'}, "
          f"model in {OUT / 'train'}")


if __name__ == "__main__":
    main()
