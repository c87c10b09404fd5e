"""Throughput: the time an optimizer step of ``fmc.train`` costs against a bare training loop.

    python scripts/bench_step.py [--minutes 5] [--extra model.features=16 ...]

1. ``python -m fmc.train`` at the CPU defaults (W&B offline logger, patch validation every epoch,
   whole-volume validation, last/best checkpoints: everything a user's run does) on the embedded
   synthetic dataset for ``--minutes``; its ``metrics.json`` says how long the training loop ran
   and how many steps it made (``fmc.training.clock``): seconds per step, amortised.
2. A bare loop of the same network, loss, optimizer, batch and patch (built from the same
   composed config, the CPU profile applied) on tensors already in memory: no loading, no
   validation, no checkpoints, no logging; timed over ``--bare-seconds`` after a warm-up.
3. The ratio (goal ≤ 1.10), and the bare loop's variants: without the ``channels_last_3d``
   memory format (``model.channels_last=false``), with 1 torch thread instead of all, and with
   the weight average's update after each step (``model.averaging``, which fmc.train makes and
   the bare loop otherwise leaves out).

The bare loop runs first, then fmc.train, so the two are measured minutes apart on a quiet
machine; ``--bare-only`` skips fmc.train.
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
from benchtools import machine, max_time, run_measured, table_header, train_config  # noqa: E402


def composed(extra: list[str]):
    """The training config fmc.train would use here (CPU profile applied)."""
    from fmc.training.profile import choose_profile

    return train_config([f"profile={choose_profile(extra)}", *extra])


def bare_loop(cfg, seconds: float, channels_last: bool | None = None, threads: int | None = None,
              averaging: bool = False) -> float:
    """Seconds per step of forward + loss + backward + clip + optimizer step, data in memory.

    ``channels_last`` None keeps the config's ``model.channels_last``; ``threads`` sets torch's
    thread count for this loop only; ``averaging`` adds ``model.averaging``'s update of the
    weight average after each step, as fmc.train makes it.
    """
    from omegaconf import open_dict

    from fmc.training.builders import build_module

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    if channels_last is not None:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.model.channels_last = channels_last
    torch.manual_seed(0)
    module = build_module(cfg, {})
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    shape = (int(cfg.data.batch_size), len(cfg.channels.list), *map(int, cfg.data.patch_size))
    inputs, target = torch.rand(shape), torch.rand((shape[0], 1, *shape[2:]))
    clip = cfg.trainer.gradient_clip_val

    def step() -> None:
        prediction = module(inputs)
        loss, _ = module.loss_fn(prediction, target, inputs[:, :1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(clip))
        optimizer.step()
        if averaging:
            module.update_weight_average()

    for _ in range(5):  # warm-up: allocator, kernels
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    per_step = (time.perf_counter() - start) / steps
    torch.set_num_threads(previous_threads)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="fmc.train budget")
    parser.add_argument("--bare-seconds", type=float, default=60.0)
    parser.add_argument("--extra", nargs="*", default=[], help="fmc.train overrides (both sides)")
    parser.add_argument("--no-variants", action="store_true", help="skip channels_last / threads")
    parser.add_argument("--bare-only", action="store_true",
                        help="only the bare loop and its variants (no fmc.train run)")
    args = parser.parse_args()
    print(machine(), f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    cfg = composed(args.extra)
    bare = bare_loop(cfg, args.bare_seconds)
    print(f"config: features {cfg.model.features}, depth {cfg.model.depth}, norm {cfg.model.norm}, "
          f"patch {list(cfg.data.patch_size)}, batch {cfg.data.batch_size}, channels "
          f"{list(cfg.channels.list)}, loss {cfg.loss.name}, channels_last "
          f"{cfg.model.channels_last}")
    print(table_header("loop", "steps", "seconds per step", "ratio to bare"))
    if not args.bare_only:
        fmc_train(args, bare)
    print(f"| bare loop (data in memory) | - | {bare:.4f} | 1.000 |", flush=True)
    if not args.no_variants:
        for label, kwargs in (("bare, channels_last off", {"channels_last": False}),
                              ("bare, 1 torch thread", {"threads": 1}),
                              (f"bare + model.averaging={cfg.model.averaging} update",
                               {"averaging": True})):
            variant = bare_loop(cfg, args.bare_seconds, **kwargs)
            print(f"| {label} | - | {variant:.4f} | {variant / bare:.3f} |", flush=True)


def fmc_train(args, bare: float) -> None:
    """Run fmc.train for ``args.minutes`` and print its row (amortised seconds per step)."""
    with tempfile.TemporaryDirectory() as folder:
        wall, peak, _ = run_measured(
            [sys.executable, "-m", "fmc.train", "content=nucleus",
             f"trainer.max_time={max_time(int(args.minutes * 60))}",
             "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}", *args.extra])
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    fmc_step = metrics["seconds_per_step"]
    volume = metrics.get("final/val_volume_seconds") or 0.0
    print(f"| fmc.train ({args.minutes:g} min, {metrics['train_seconds']:.0f} s loop, "
          f"{volume:.0f} s of it whole-volume validation; command {wall:.0f} s with start-up "
          f"and test scoring, peak RSS {peak:.2f} GB) | {metrics['global_step']} | "
          f"{fmc_step:.4f} | **{fmc_step / bare:.3f}** |", flush=True)


if __name__ == "__main__":
    main()
