"""The cluster path: a sweep through submitit (hydra/launcher=local, the machinery of
hydra/launcher=slurm) trains one model per job and resumes only unfinished jobs; the README's
SLURM example is generated from conf/hydra/launcher/slurm.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_RUN, run_command

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_slurm_example_comes_from_the_launcher_config():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "slurm_example.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "slurm_example.py")],
                             capture_output=True, text=True, check=True).stdout
    assert "hydra/launcher=slurm" in printed and "partition=gpu" in printed


def test_the_slurm_launcher_composes_with_its_resources(tmp_path: Path):
    result = run_command("fmc.train", "hydra/launcher=slurm", "--cfg", "hydra",
                         "hydra.launcher.partition=a100", "study=1", "content=nucleus")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout
    for line in ("partition: a100", "gpus_per_node: 1", "cpus_per_task: 8", "timeout_min: 1440"):
        assert line in result.stdout, line


def test_a_two_job_sweep_through_submitit_resumes_only_the_unfinished_job(h5_root: Path,
                                                                          tmp_path: Path):
    sweep = tmp_path / "sweep"
    command = ["fmc.train", "--multirun", "hydra/launcher=local", *TINY_RUN,
               f"data.root={h5_root}", "seed=1,2", "resume=true", f"hydra.sweep.dir={sweep}"]
    result = run_command(*command, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all((sweep / job / "metrics.json").is_file() for job in ("0", "1"))
    assert list((sweep / ".submitit").iterdir()), "submitit keeps each job's logs"
    finished = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    (sweep / "1" / "metrics.json").unlink()  # job 1 killed after its last checkpoint
    result = run_command(*command, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == finished
    assert (sweep / "1" / "metrics.json").is_file()
