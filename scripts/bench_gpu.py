"""One prepared GPU benchmark: training steps/s, predict time against MONAI, peak memory, and the
challenge budget per study, in one table (docs/benchmarks.md, "GPU").

    python scripts/bench_gpu.py                   # on a GPU (about 9 minutes on an H200: docs/benchmarks.md)
    python scripts/bench_gpu.py --write-docs      # ... and put the table into docs/benchmarks.md
    python scripts/bench_gpu.py --smoke           # tiny sizes on the CPU: checks the script runs
    python scripts/bench_gpu.py --sections train --json rows.jsonl   # one part, rows kept as they come
    python scripts/bench_gpu.py --rows rows.jsonl --write-docs       # the table again from kept rows

It makes its own data (benchtools.phantom volumes of each study's typical size) and measures:

1. **train**: optimizer steps/s of fmc's GPU configuration (``profile=gpu``: the default network
   or ``--model unet3d`` (RWTH-GE's), 16 features, GroupNorm, confidence head, SSIM+L1;
   64×256×256 patches, batch 1 and 2) through
   Lightning with fmc's module, in ``32-true``, ``bf16-mixed`` and ``bf16-mixed`` + ``torch.compile``
   (steps after a warm-up; patches already on the device, so the data loader is not measured;
   the compiled and the ``channels_last_3d``-off variants at the first batch size only).
2. **loader**: training patches/s of fmc's data module at the GPU patch for 0, 2, 4, 8 workers
   (CPU work: does the loader keep up with the steps of 1.?).
3. **predict**: ``fmc.inference.prediction.predict_file`` (read, distance channel, tiles, blend,
   write) on a study-1-sized volume with ``amp=none``, ``bf16`` and ``fp16`` and a study-5-sized one with
   ``amp=bf16``, the default window and overlap; and MONAI's ``sliding_window_inference`` on the same network,
   tiles, overlap and Gaussian blend over the study-1-sized input already in memory, against
   fmc's tile loop on the same input.
4. **budget**: per-case minutes for each study's typical volume from the measured seconds per
   tile of the full study-5 run, at overlap 0.5 and 0.25.

Peak GPU memory (``torch.cuda.max_memory_allocated``) is reported per row. With ``--json`` each row
is appended the moment it is measured, so a run stopped by a time limit keeps what it finished;
``--rows`` prints (and with ``--write-docs`` writes) the table from such a file without measuring.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchtools import (  # noqa: E402
    REPO,
    append_jsonl,
    dims,
    phantom,
    read_jsonl,
    save_module,
    study_meta,
    synchronize,
    table_header,
    table_row,
    train_config,
    write_marked_block,
)

from fmc.core.studies import STUDIES  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench_gpu:start -->", "<!-- bench_gpu:end -->"


@dataclass
class Sizes:
    """What to measure at: the GPU sizes, or tiny ones for ``--smoke``."""

    patch: tuple[int, int, int] = (64, 256, 256)
    features: int = 16
    batches: tuple[int, ...] = (1, 2)
    steps: int = 30
    warmup: int = 5
    study1: tuple[int, int, int] = STUDIES[1].typical_shape
    study5: tuple[int, int, int] = STUDIES[5].typical_shape
    workers: tuple[int, ...] = (0, 2, 4, 8)
    loader_patches: int = 40
    model: str | None = None  # a conf/model/ name; None = fmc's default network


@dataclass(frozen=True)
class TrainVariant:
    """One way to train: fmc's ``trainer=gpu`` is ``bf16-mixed`` with channels_last_3d."""

    precision: str
    compiled: bool = False
    channels_last: bool = True
    cudnn_benchmark: bool = False  # Trainer(benchmark=True): cuDNN picks its fastest 3D kernels

    def label(self) -> str:
        return self.precision + (" + compile" if self.compiled else "") + \
            ("" if self.channels_last else ", channels_last off") + \
            (", cudnn.benchmark" if self.cudnn_benchmark else "")


# Measured in this order (every batch size for the first two; the rest at the first batch size,
# compiled last: its compilation is the slowest part of the section).
TRAIN_VARIANTS = (TrainVariant("32-true"), TrainVariant("bf16-mixed"),
                  TrainVariant("bf16-mixed", channels_last=False),
                  TrainVariant("bf16-mixed", cudnn_benchmark=True),
                  TrainVariant("bf16-mixed", compiled=True))
SMOKE = Sizes(patch=(16, 32, 32), features=4, batches=(1,), steps=2, warmup=1,
              study1=(24, 48, 56), study5=(32, 64, 64), workers=(0, 1), loader_patches=4)


@dataclass
class Row:
    section: str
    what: str
    value: str
    peak_gb: float | None = None
    note: str = ""


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def gpu_module(sizes: Sizes, compile_network: bool = False, channels_last: bool = True):
    """fmc's GPU-profile module, as ``python -m fmc.train profile=gpu`` builds it."""
    from fmc.training.builders import build_module

    cfg = train_config(["profile=gpu", "study=1", "content=nucleus",
                        f"model.features={sizes.features}",
                        *([f"model={sizes.model}"] if sizes.model else []),
                        f"data.patch_size=[{','.join(map(str, sizes.patch))}]",
                        f"model.compile={str(compile_network).lower()}",
                        f"model.channels_last={str(channels_last).lower()}"])
    return build_module(cfg, {"spacing_zyx": [1.0, 0.195, 0.195], "study": 1,
                              "content": "nucleus"})


class _Timer:
    """A Lightning callback timing the steps after ``warmup``."""

    def __init__(self, warmup: int, device: str) -> None:
        import lightning as L

        outer = self

        class Callback(L.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step == warmup:
                    synchronize(device)
                    outer.start = time.perf_counter()

        self.callback = Callback()
        self.start = None


def train_steps_per_second(sizes: Sizes, batch: int, variant: TrainVariant, device: str
                           ) -> tuple[float, float | None]:
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    class Patches(Dataset):  # patches already in memory: the step alone is measured
        def __init__(self) -> None:
            generator = torch.Generator().manual_seed(0)
            shape = (2, *sizes.patch)
            self.input = torch.rand(shape, generator=generator)
            self.target = self.input[:1] * 0.8 + 0.1

        def __len__(self) -> int:
            return 10**6

        def __getitem__(self, index: int) -> dict:
            return {"input": self.input, "target": self.target}

    module = gpu_module(sizes, variant.compiled, variant.channels_last)
    timer = _Timer(sizes.warmup, device)
    total = sizes.warmup + sizes.steps
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        precision=variant.precision, max_steps=total, logger=False,
                        benchmark=variant.cudnn_benchmark,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[timer.callback])
    reset_peak(device)
    trainer.fit(module, DataLoader(Patches(), batch_size=batch, pin_memory=device != "cpu"))
    synchronize(device)
    return sizes.steps / (time.perf_counter() - timer.start), peak_gb(device)


def write_study_volume(folder: Path, study: int, shape) -> Path:
    """A :func:`benchtools.phantom` of ``shape`` at the study's spacing, as a challenge TIFF."""
    from fmc.io.tiff import write_volume

    path = folder / f"image_{study}_nucleus_angle.tif"
    write_volume(path, phantom(shape, study), study_meta(study))
    return path


def predict_seconds(checkpoint: Path, volume: Path, out: Path, device: str, amp: str,
                    batch_size: int | None = None, cudnn_benchmark: bool = False,
                    overlap: float | None = None) -> tuple[float, int, float | None]:
    from fmc.inference.predict_settings import default_settings
    from fmc.inference.prediction import predict_file
    from fmc.inference.tiling import tile_count
    from fmc.models.checkpoint import load_fusion_module

    settings = default_settings(amp=amp, progress=False)
    if batch_size is not None:
        settings = replace(settings, batch_size=batch_size)
    if overlap is not None:
        settings = replace(settings, overlap=overlap)
    settings = settings.check()
    model = load_fusion_module(checkpoint, device=device)
    from fmc.io.tiff import TiffVolume

    with TiffVolume(volume) as opened:
        shape = opened.shape
    tiles = tile_count(shape, model.hparams.patch_size, settings.overlap)
    reset_peak(device)
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        start = time.perf_counter()
        predict_file(model, volume, out, settings)
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        torch.backends.cudnn.benchmark = before
    return seconds, tiles, peak_gb(device)


# fmc.predict's variants timed on the study-1-sized case: (amp, batch size or None for the
# default, cudnn.benchmark). The study-5-sized case runs once, with bf16 and the defaults.
PREDICT_VARIANTS = (("none", None, False), ("bf16", None, False), ("fp16", None, False),
                    ("bf16", None, True), ("bf16", 4, False))


def monai_against_fmc(checkpoint: Path, volume: Path, device: str, amp: str
                      ) -> tuple[float, float, int]:
    """The same tiles, overlap, batch and Gaussian blend: MONAI's sliding window and fmc's tile
    loop over one in-memory input; seconds for each and the tile count."""
    from monai.inferers import sliding_window_inference

    from fmc.inference.network_input import NetworkInput, open_volume
    from fmc.inference.precision import autocast
    from fmc.inference.predict_settings import default_settings
    from fmc.inference.tiling import ArraySource, iter_predicted_slabs, tile_count
    from fmc.models.checkpoint import load_fusion_module

    settings = default_settings(progress=False)
    model = load_fusion_module(checkpoint, device=device)
    patch = tuple(int(p) for p in model.hparams.patch_size)
    opened = open_volume(volume)
    try:
        network_input = NetworkInput(opened, model.hparams.channels,
                                     model.hparams.get("channel_scales_um"), fallback_study=1)
        channels = network_input.slab(0, network_input.shape[0])
    finally:
        opened.close()
    tiles = tile_count(channels.shape[1:], patch, settings.overlap)
    synchronize(device)
    start = time.perf_counter()
    for _ in iter_predicted_slabs(ArraySource(channels), model, patch, settings.overlap,
                                  settings.batch_size, device=device, amp=amp):
        pass
    synchronize(device)
    fmc_seconds = time.perf_counter() - start
    inputs = torch.from_numpy(channels[None])
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device, amp):
        sliding_window_inference(inputs, patch, settings.batch_size, model, settings.overlap,
                                 mode="gaussian", sw_device=device, device="cpu")
    synchronize(device)
    return fmc_seconds, time.perf_counter() - start, tiles


def loader_patches_per_second(root: Path, sizes: Sizes, workers: int) -> float:
    from fmc.training.builders import build_datamodule

    cfg = train_config(["profile=gpu", "study=1", "content=nucleus", f"data.root={root}",
                        f"data.num_workers={workers}",
                        f"data.patch_size=[{','.join(map(str, sizes.patch))}]"])
    datamodule = build_datamodule(cfg, root)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    seen = 0
    while seen < sizes.loader_patches:
        seen += len(next(iterator)["input"])
    return seen / (time.perf_counter() - start)


def prepared_training_data(folder: Path, sizes: Sizes) -> Path:
    from fmc.preprocessing.conversion import convert_folder
    from fmc.preprocessing.splits import write_lists
    from fmc.simulation.synth import write_pair

    raw = folder / "train_raw"
    shape = tuple(int(p * 1.25) for p in sizes.patch)
    for index in range(3):
        write_pair(raw, 1, "nucleus", index, shape=shape, scale=1.0)
    root = folder / "train_h5"
    convert_folder(raw, root, progress=False)
    write_lists(root)
    return root


def budget_rows(seconds_per_tile: float, sizes_label: str) -> list[Row]:
    from fmc.inference.tiling import tile_count

    rows = []
    for study, facts in sorted(STUDIES.items()):
        shape = tuple(int(n) for n in facts.typical_shape)
        parts = []
        for overlap in (0.5, 0.25):
            tiles = tile_count(shape, (64, 256, 256), overlap)
            parts.append(f"{tiles} tiles at {overlap}: {tiles * seconds_per_tile / 60:.1f} min")
        rows.append(Row("budget", f"study {study} {dims(shape)}", "; ".join(parts),
                        note=sizes_label))
    return rows


class Rows(list):
    """The measured rows; each one printed, and appended to ``json_path`` (if any) at once."""

    def __init__(self, json_path: Path | None, device: str) -> None:
        super().__init__()
        self.json_path, self.device = json_path, device

    def append(self, row: Row) -> None:
        super().append(row)
        print(row, flush=True)
        if self.json_path is not None:
            append_jsonl(self.json_path, {**row.__dict__, "device": device_name(self.device),
                                          "torch": torch.__version__,
                                          "date": time.strftime("%Y-%m-%d")})

    def __iadd__(self, rows):
        for row in rows:
            self.append(row)
        return self


def run(sizes: Sizes, device: str, sections: set[str], work: Path,
        json_path: Path | None = None, overlap: float | None = None) -> list[Row]:
    rows = Rows(json_path, device)
    if "train" in sections:
        plan = [(batch, variant) for batch in sizes.batches for variant in TRAIN_VARIANTS[:2]]
        plan[2:2] = [(sizes.batches[0], variant) for variant in TRAIN_VARIANTS[2:4]]
        plan.append((sizes.batches[0], TRAIN_VARIANTS[4]))
        for batch, variant in plan:
            if device == "cpu":  # bf16 on a CPU is far slower: the smoke run stays float32
                variant = replace(variant, precision="32-true")
            steps, peak = train_steps_per_second(sizes, batch, variant, device)
            rows.append(Row("train", f"{variant.label()}, batch {batch}", f"{steps:.2f} steps/s",
                            peak, f"patch {dims(sizes.patch)}"))
    if "loader" in sections:
        root = prepared_training_data(work, sizes)
        for workers in sizes.workers:
            rate = loader_patches_per_second(root, sizes, workers)
            rows.append(Row("loader", f"{workers} workers", f"{rate:.2f} patches/s"))
    if sections & {"predict", "budget", "monai"}:
        checkpoint = save_module(gpu_module(sizes), work / "gpu.ckpt")
        volumes = {1: write_study_volume(work, 1, sizes.study1)}
        if sections & {"predict", "budget"}:
            # study 5 third, right after the amp comparison: it decides the challenge budget
            plan = [(1, variant) for variant in PREDICT_VARIANTS[:2]] + \
                [(5, ("bf16", None, False))] + [(1, variant) for variant in PREDICT_VARIANTS[2:]]
            for index, (study, (amp, batch_size, cudnn_benchmark)) in enumerate(plan):
                if device == "cpu" and (amp != "none" or batch_size or cudnn_benchmark):
                    if study == 1:
                        continue  # the CPU smoke run: one float32 prediction of each size
                    amp = "none"
                if study not in volumes:
                    volumes[study] = write_study_volume(work, study, sizes.study5)
                seconds, tiles, peak = predict_seconds(
                    checkpoint, volumes[study], work / f"out_{index}_{study}", device, amp,
                    batch_size, cudnn_benchmark, overlap)
                label = f"study {study}-sized, amp={amp}" + \
                    (f", batch {batch_size}" if batch_size else "") + \
                    (", cudnn.benchmark" if cudnn_benchmark else "") + \
                    (f", overlap {overlap}" if overlap is not None else "")
                rows.append(Row("predict", label,
                                f"{seconds:.1f} s ({tiles} tiles, {seconds / tiles:.3f} s/tile)",
                                peak, dims(sizes.study1 if study == 1 else sizes.study5)))
                if study == 5:
                    shutil.rmtree(work / f"out_{index}_{study}", ignore_errors=True)  # 4.6 GB
                    if "budget" in sections:
                        rows += budget_rows(seconds / tiles, f"{seconds / tiles:.3f} s/tile "
                                                             f"(study-5 run, {label.partition(', ')[2]})")
        if "monai" in sections:
            for amp in ("none",) if device == "cpu" else ("none", "bf16"):
                fmc_s, monai_s, tiles = monai_against_fmc(checkpoint, volumes[1], device, amp)
                rows.append(Row("monai", f"same {tiles} tiles, amp={amp}",
                                f"fmc {fmc_s:.1f} s, MONAI {monai_s:.1f} s "
                                f"(fmc/MONAI {fmc_s / monai_s:.2f})"))
    return rows


def table(rows: list[Row], name: str, command: str, torch_version: str = torch.__version__,
          date: str | None = None) -> str:
    lines = [f"GPU: **{name}**, torch {torch_version}, {date or time.strftime('%Y-%m-%d')}; "
             f"`{command}`", "", table_header("section", "what", "result", "peak GPU memory",
                                              "note")]
    for row in rows:
        memory = "" if row.peak_gb is None else f"{row.peak_gb:.1f} GiB"
        lines.append(table_row(row.section, row.what, row.value, memory, row.note))
    return "\n".join(lines)


def write_docs(text: str) -> None:
    write_marked_block(DOCS, MARK_START, MARK_END, text, "## GPU (scripts/bench_gpu.py)")


def kept_rows(path: Path) -> tuple[list[Row], dict]:
    """Rows appended by ``--json`` and the facts of the run (device, torch, date) of the last."""
    rows, facts = [], {}
    for record in read_jsonl(path):
        facts = {key: record.pop(key, None) for key in ("device", "torch", "date")}
        rows.append(Row(**record))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows, facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU, tests)")
    parser.add_argument("--sections", default="train,loader,predict,monai,budget")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also append each row here as a JSON line, as "
                        "soon as it is measured")
    parser.add_argument("--rows", type=Path, help="measure nothing: the table from rows an earlier "
                        "--json kept")
    parser.add_argument("--overlap", type=float, help="the predict section's tile overlap "
                        "(default: conf/inference/default.yaml's)")
    parser.add_argument("--model", help="a conf/model/ name (default: fmc's default network; "
                        "unet3d: RWTH-GE's)")
    args = parser.parse_args()
    command = "python scripts/bench_gpu.py" + (" --smoke" if args.smoke else "") + \
        (f" --model {args.model}" if args.model else "")
    if args.rows:
        rows, facts = kept_rows(args.rows)
        order = ["train", "loader", "predict", "monai", "budget"]
        rows.sort(key=lambda row: order.index(row.section) if row.section in order else len(order))
        text = table(rows, facts["device"], command, facts["torch"], facts["date"])
    else:
        sizes = replace(SMOKE if args.smoke else Sizes(), model=args.model)
        sections = set(args.sections.split(","))
        if args.device == "cpu" and not args.smoke and sections - {"loader"}:
            print("no GPU: give --smoke to check the script on the CPU (or --sections loader: the "
                  "data loader is CPU work)", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="fmc-bench-gpu-") as work:
            rows = run(sizes, args.device, sections, Path(work), args.json, args.overlap)
        text = table(rows, device_name(args.device), command)
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
