"""Throughput: the time an optimizer step of ``fmc.train`` costs against a bare training loop.

    python scripts/bench_step.py [--minutes 5] [--extra model.features=16 ...]

1. ``python -m fmc.train`` at the CPU defaults (W&B offline logger, patch validation every epoch,
   whole-volume validation, last/best checkpoints: everything a user's run does) on the embedded
   synthetic dataset for ``--minutes``; its ``metrics.json`` says how long the training loop ran
   and how many steps it made (``fmc.train_clock``): seconds per step, amortised.
2. A bare loop of the same network, loss, optimizer, batch and patch (built from the same
   composed config, the CPU profile applied) on tensors already in memory: no loading, no
   validation, no checkpoints, no logging; timed over ``--bare-seconds`` after a warm-up.
3. The ratio (goal ≤ 1.10), and the bare loop's variants: ``channels_last_3d`` memory format
   and 1 vs all torch threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import machine, run_measured  # noqa: E402


def composed(extra: list[str]):
    """The training config fmc.train would use here (CPU profile applied)."""
    from hydra import compose, initialize_config_dir

    from fmc.cli import CONFIG_DIR
    from fmc.training import apply_cpu_profile

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=extra)
    apply_cpu_profile(cfg, torch.cuda.is_available())
    return cfg


def bare_loop(cfg, seconds: float, channels_last: bool = False, threads: int | None = None
              ) -> float:
    """Seconds per step of forward + loss + backward + clip + optimizer step, data in memory."""
    from fmc.training import build_module

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = build_module(cfg, {})
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    shape = (int(cfg.data.batch_size), len(cfg.channels.list), *map(int, cfg.data.patch_size))
    inputs, target = torch.rand(shape), torch.rand((shape[0], 1, *shape[2:]))
    if channels_last:
        module = module.to(memory_format=torch.channels_last_3d)
        inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        target = target.contiguous(memory_format=torch.channels_last_3d)
    clip = cfg.trainer.gradient_clip_val

    def step() -> None:
        prediction = module(inputs)
        loss, _ = module.loss_fn(prediction, target, inputs[:, :1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(clip))
        optimizer.step()

    for _ in range(5):  # warm-up: allocator, kernels
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="fmc.train budget")
    parser.add_argument("--bare-seconds", type=float, default=60.0)
    parser.add_argument("--extra", nargs="*", default=[], help="fmc.train overrides (both sides)")
    parser.add_argument("--no-variants", action="store_true", help="skip channels_last / threads")
    args = parser.parse_args()
    print(machine(), f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory() as folder:
        wall, peak, _ = run_measured(
            [sys.executable, "-m", "fmc.train", "content=nucleus",
             f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
             "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}", *args.extra])
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    fmc_step = metrics["seconds_per_step"]
    volume = metrics.get("final/val_volume_seconds", 0.0)
    cfg = composed(args.extra)
    bare = bare_loop(cfg, args.bare_seconds)
    print(f"config: features {cfg.model.features}, depth {cfg.model.depth}, norm {cfg.model.norm}, "
          f"patch {list(cfg.data.patch_size)}, batch {cfg.data.batch_size}, channels "
          f"{list(cfg.channels.list)}, loss {cfg.loss.name}")
    print("| loop | steps | seconds per step | ratio to bare |")
    print("|---|---|---|---|")
    print(f"| fmc.train ({args.minutes:g} min, {metrics['train_seconds']:.0f} s loop, "
          f"{volume:.0f} s of it whole-volume validation) | {metrics['global_step']} | "
          f"{fmc_step:.4f} | **{fmc_step / bare:.3f}** |")
    print(f"| bare loop (data in memory) | - | {bare:.4f} | 1.000 |")
    if not args.no_variants:
        for label, kwargs in (("bare, channels_last_3d", {"channels_last": True}),
                              ("bare, 1 torch thread", {"threads": 1})):
            variant = bare_loop(cfg, args.bare_seconds, **kwargs)
            print(f"| {label} | - | {variant:.4f} | {variant / bare:.3f} |")
    print(f"(fmc.train command {wall:.0f} s including start-up and test scoring, peak RSS "
          f"{peak:.2f} GB)")


if __name__ == "__main__":
    main()
