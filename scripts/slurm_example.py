"""Print the README's SLURM example from conf/hydra/launcher/slurm.yaml (one source for both).

    python scripts/slurm_example.py            # the block README.md shows
    python scripts/slurm_example.py --check    # exit 1 when README.md's block differs

tests/training/test_cluster.py runs ``--check``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml"
SWEEP = "study=1,2,3,4,5 content=nucleus,membrane data.root=/scratch/fmc_h5 trainer=gpu"


def example() -> str:
    """The bash block: ``hydra/launcher=slurm`` and, as comments, the resources it asks for."""
    keys = {k: v for k, v in yaml.safe_load(LAUNCHER.read_text()).items() if k != "defaults"}
    resources = " ".join(f"{key}={value}" for key, value in keys.items())
    return "\n".join([
        "# a SLURM cluster, one GPU per model (hydra-submitit-launcher); the ten models as ten jobs",
        f"# conf/hydra/launcher/slurm.yaml asks for {resources}",
        "# (override any: hydra.launcher.partition=NAME); hydra/launcher=local runs the same",
        "# machinery on this machine first",
        "python -m fmc.train --multirun hydra/launcher=slurm \\",
        f"    {SWEEP}  # [compose only: SLURM]",
        "# killed? the same command + resume=true hydra.sweep.dir=<its folder>: unfinished jobs run",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with README.md")
    args = parser.parse_args()
    text = example()
    if not args.check:
        print(text)
        return 0
    if text in (ROOT / "README.md").read_text():
        return 0
    print("README.md's SLURM example differs from conf/hydra/launcher/slurm.yaml; paste:\n" + text)
    return 1


if __name__ == "__main__":
    sys.exit(main())
