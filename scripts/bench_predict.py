"""Benchmarks of ``fmc.predict``: memory on a study-5 volume, overhead, MONAI, per-case budget.

    python scripts/bench_predict.py large      # 309×1920×1920 uint16 through the real command
    python scripts/bench_predict.py overhead   # predict time / pure forward time of the same tiles
    python scripts/bench_predict.py monai      # vs monai.inferers.sliding_window_inference
    python scripts/bench_predict.py budget     # tiles per study × measured time per tile

``large`` runs ``python -m fmc.predict`` in a child process and reports its wall time and peak
RSS (``os.wait4``). ``overhead`` and ``monai`` run in-process on a smaller volume. MONAI is only a
benchmark extra (``pip install monai``), never a runtime dependency. Results go to
docs/benchmarks.md by hand, with the machine line printed here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import (  # noqa: E402
    dims,
    machine,
    markdown_table,
    phantom,
    run_measured,
    save_module,
    study_meta,
    synchronize,
    zyx_argument,
)

from fmc.core.studies import STUDIES  # noqa: E402
from fmc.inference.tiling import tile_count  # noqa: E402
from fmc.io.metadata import VolumeMeta  # noqa: E402
from fmc.io.tiff import write_volume  # noqa: E402

STUDY5_SHAPE = STUDIES[5].typical_shape
STUDY5 = study_meta(5)


def save_checkpoint(path: Path, features: int, depth: int, patch, norm: str = "instance",
                    study: int = 5) -> Path:
    """An untrained fmc checkpoint (residual, raw + surface distance) of the given size."""
    from fmc.models.module import FusionModule

    torch.manual_seed(0)
    model = FusionModule(features=features, depth=depth, norm=norm, residual=True,
                         patch_size=list(patch), study=study, content="nucleus")
    with torch.no_grad():  # a non-zero last layer: the network really changes the input
        for parameter in model.net.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return save_module(model, path)


def bench_large(args) -> None:
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="fmc-bench-predict-"))
    source = folder / "raw" / "image_0_nucleus_angle.tif"
    if not source.is_file():
        print(f"writing a {STUDY5_SHAPE} uint16 volume to {source} ...", flush=True)
        write_volume(source, phantom(STUDY5_SHAPE), STUDY5)
    ckpt = save_checkpoint(folder / "tiny.ckpt", features=2, depth=2, patch=args.patch, norm="none")
    tiles = tile_count(STUDY5_SHAPE, args.patch, args.overlap)
    command = [sys.executable, "-m", "fmc.predict", f"ckpt={ckpt}", f"input={source}",
               f"output={folder / 'pred'}", f"overlap={args.overlap}", "batch_size=1",
               "progress=false", f"fallback={args.fallback}", *args.extra]
    print(" ".join(command[1:]), flush=True)
    seconds, rss, _ = run_measured(command)
    output = folder / "pred" / source.name
    print(machine())
    print(f"study-5 volume {STUDY5_SHAPE}, tiny net (features 2, depth 2), tile {args.patch}, "
          f"overlap {args.overlap} ({tiles} tiles), fallback={args.fallback}: {seconds:.0f} s, "
          f"peak RSS {rss:.2f} GB; input {source.stat().st_size / 1e9:.2f} GB, output "
          f"{output.stat().st_size / 1e9:.2f} GB")


def _model_and_input(args):
    from fmc.inference.network_input import NetworkInput
    from fmc.models.checkpoint import load_fusion_module

    folder = Path(tempfile.mkdtemp(prefix="fmc-bench-overhead-"))
    shape = tuple(args.shape)
    meta = VolumeMeta(study=1, content="nucleus", spacing_zyx=(1.0, 0.39, 0.39))
    source = write_volume(folder / "image_0_nucleus_angle.tif", phantom(shape), meta)
    ckpt = save_checkpoint(folder / "model.ckpt", args.features, args.depth, args.patch, study=1)
    model = load_fusion_module(ckpt)
    return folder, source, model, NetworkInput


def _forward_seconds(model, patch, calls: int, batch_size: int, device: str = "cpu") -> float:
    """Seconds of ``calls`` forward passes of one batch, after an untimed warm-up."""
    inputs = torch.rand(batch_size, len(model.hparams.channels), *patch, device=device)
    with torch.inference_mode():
        model(inputs)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            model(inputs)
        synchronize(device)
    return time.perf_counter() - start


def bench_overhead(args) -> None:
    from fmc.inference.predict_settings import default_settings
    from fmc.inference.prediction import predict_file

    folder, source, model, _ = _model_and_input(args)
    settings = default_settings(patch=tuple(args.patch), overlap=args.overlap,
                                batch_size=args.batch_size, progress=False)
    predict_file(model, source, folder / "warm", settings)  # warm-up (allocator, caches)
    start = time.perf_counter()
    predict_file(model, source, folder / "pred", settings)
    total = time.perf_counter() - start
    tiles = tile_count(args.shape, args.patch, args.overlap)
    rows = tile_count((args.shape[0], 1, 1), (args.patch[0], 1, 1), args.overlap)
    per_row = tiles // rows
    # The same calls as the sliding window: full batches within each z-row, then the remainder.
    full, remainder = divmod(per_row, args.batch_size)
    forward = _forward_seconds(model, args.patch, rows * full, args.batch_size)
    if remainder:
        forward += _forward_seconds(model, args.patch, rows, remainder)
    print(machine())
    print(f"volume {tuple(args.shape)}, net features {args.features} depth {args.depth}, tile "
          f"{tuple(args.patch)}, overlap {args.overlap}, batch {args.batch_size}: {tiles} tiles; "
          f"predict_file {total:.1f} s (read, channels, tiles, write) / pure forward "
          f"{forward:.1f} s = {total / forward:.3f}")


def bench_monai(args) -> None:
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        raise SystemExit("this benchmark needs MONAI: pip install monai") from None
    from fmc.inference.network_input import open_volume
    from fmc.inference.tiling import sliding_window_predict

    folder, source, model, NetworkInput = _model_and_input(args)
    opened = open_volume(source)
    channels = NetworkInput(opened, model.hparams.channels).slab(0, args.shape[0])
    opened.close()
    patch = tuple(args.patch)
    timings = {"fmc": [], "monai": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = sliding_window_predict(channels, model, patch, overlap=0.5,
                                      batch_size=args.batch_size)
        timings["fmc"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.inference_mode():
            theirs = sliding_window_inference(torch.from_numpy(channels)[None], patch,
                                              args.batch_size, model, overlap=0.5,
                                              mode="gaussian")[0, 0].numpy()
        timings["monai"].append(time.perf_counter() - start)
    fmc_s, monai_s = min(timings["fmc"]), min(timings["monai"])
    difference = np.abs(ours - theirs)
    print(machine())
    print(f"volume {tuple(args.shape)}, net features {args.features} depth {args.depth}, tile "
          f"{patch}, overlap 0.5, gaussian, batch {args.batch_size} (best of {args.repeats}): "
          f"fmc {fmc_s:.1f} s, MONAI {monai_s:.1f} s, ratio {fmc_s / monai_s:.3f}; tiles fmc "
          f"{tile_count(args.shape, patch, 0.5)}; |fmc - MONAI| max {difference.max():.2e}, "
          f"mean {difference.mean():.2e} (output range {ours.min():.2f}..{ours.max():.2f})")


def bench_budget(args) -> None:
    from fmc.models.checkpoint import load_fusion_module

    folder = Path(tempfile.mkdtemp(prefix="fmc-bench-budget-"))
    ckpt = save_checkpoint(folder / "model.ckpt", args.features, args.depth, args.patch)
    model = load_fusion_module(ckpt, args.device)
    repeats = 3
    per_batch = _forward_seconds(model, args.patch, repeats, args.batch_size, args.device) \
        / repeats / args.batch_size
    where = "GPU " + torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(machine())
    print(f"net features {args.features} depth {args.depth}, tile {tuple(args.patch)}, "
          f"{where}: {per_batch:.2f} s per tile")
    rows = []
    for study, profile in STUDIES.items():
        half = tile_count(profile.typical_shape, args.patch, 0.5)
        quarter = tile_count(profile.typical_shape, args.patch, 0.25)
        rows.append((study, dims(profile.typical_shape), half, f"{half * per_batch / 60:.1f} min",
                     quarter, f"{quarter * per_batch / 60:.1f} min"))
    print(markdown_table(("study", "typical ZYX", "tiles (overlap 0.5)", "forward time",
                          "tiles (overlap 0.25)", "forward time"), rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    large = sub.add_parser("large")
    zyx_argument(large, "--patch", (64, 256, 256))
    large.add_argument("--overlap", type=float, default=0.0)
    large.add_argument("--fallback", default="none")
    large.add_argument("--workdir", help="keep the volume here between runs")
    large.add_argument("--extra", nargs="*", default=[], help="more fmc.predict overrides")
    for name in ("overhead", "monai"):
        part = sub.add_parser(name)
        zyx_argument(part, "--shape", (64, 384, 384))
        zyx_argument(part, "--patch", (32, 128, 128))
        part.add_argument("--features", type=int, default=16)
        part.add_argument("--depth", type=int, default=3)
        part.add_argument("--overlap", type=float, default=0.5)
        part.add_argument("--batch-size", type=int, default=2)
        part.add_argument("--repeats", type=int, default=2)
    budget = sub.add_parser("budget")
    zyx_argument(budget, "--patch", (64, 256, 256))
    budget.add_argument("--features", type=int, default=16)
    budget.add_argument("--depth", type=int, default=3)
    budget.add_argument("--batch-size", type=int, default=1)
    budget.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    {"large": bench_large, "overhead": bench_overhead, "monai": bench_monai,
     "budget": bench_budget}[args.what](args)


if __name__ == "__main__":
    main()
