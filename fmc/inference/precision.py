"""The network's precision and memory on each batch of tiles: mixed precision (``amp``) with the
blend kept in float32, and batches that shrink when a GPU runs out of memory.

fmc accumulates the blended prediction on the CPU always (a numpy slab of ``patch_z`` planes),
so the GPU holds only the network and one batch of tiles; when even that does not fit, the
batch is halved (nnU-Net's first fallback) down to a single tile, then the run stops with one
line saying what to change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from fmc.core.errors import FmcConfigError, FmcInputError

log = logging.getLogger("fmc.predict")
# torch >= 2.5 names it at the top level; 2.4 (fmc's lowest torch) only under torch.cuda.
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# Mixed precision of prediction: the network in bfloat16 or float16, the blend in float32.
# auto: bf16 on a CUDA GPU that supports it, none elsewhere (docs/benchmarks.md, "GPU": on an H200
# bf16 predicted a study-1-sized case 4 % faster in 10 % less GPU memory; on a CPU bf16 is far slower).
AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def resolve_amp(device: str | torch.device, amp: str) -> str:
    """``amp`` with ``auto`` made concrete for ``device``: ``bf16`` on a CUDA device with bfloat16
    support, ``none`` otherwise; any other choice is returned as it is."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    if amp != "auto":
        return amp
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "none"


class OutOfMemoryHalving:
    """Forward passes that survive a GPU running out of memory: the batch is split in halves
    (down to one tile), and the smaller size is kept for the rest of the volume."""

    def __init__(self) -> None:
        self.limit: int | None = None

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
            device: str | torch.device, amp: str) -> torch.Tensor:
        """``forward`` on ``inputs`` in parts of at most :attr:`limit` tiles; ``(N, Z, Y, X)``
        float32 on the CPU (the blend accumulates there)."""
        size = len(inputs) if self.limit is None else min(self.limit, len(inputs))
        outputs, first = [], 0
        while first < len(inputs):
            part = inputs[first:first + size]
            try:
                with autocast(device, amp):  # the network in low precision, if asked
                    outputs.append(forward(part).float().cpu()[:, 0])
            except OUT_OF_MEMORY:
                if size == 1:
                    raise FmcInputError(
                        "the GPU ran out of memory on a single tile: give a smaller patch, "
                        "amp=bf16, or device=cpu") from None
                size = max(1, size // 2)
                self.limit = size
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("out of GPU memory: predicting %d tile(s) at a time", size)
                continue
            first += len(part)
        return torch.cat(outputs)


def autocast(device: str | torch.device, amp: str):
    """``torch.autocast`` for ``amp`` (``bf16`` | ``fp16`` | ``auto``, see :func:`resolve_amp`) on
    ``device``; nothing for ``none``.

    Only the network runs in low precision: the tiles' blend, the weights and the division stay
    float32 (:func:`fmc.inference.tiling.iter_predicted_slabs`).
    """
    amp = resolve_amp(device, amp)
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def available_memory_bytes(device: str | torch.device) -> int | None:
    """Free memory of ``device``: the GPU's free bytes, or the host's ``MemAvailable``; None
    when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tile_memory_floor(patch, channels: int, features: int, batch_size: int) -> int:
    """A lower bound of the bytes one batch of tiles takes: float32 inputs, the first layer's
    activations (twice ``features`` channels), the window's weights and its two running sums."""
    voxels = 1
    for side in patch:
        voxels *= int(side)
    return 4 * voxels * (batch_size * (channels + 2 * features) + 3)


def check_tile_fits(patch, channels: int, features: int, batch_size: int,
                    device: str | torch.device) -> None:
    """Refuse a tile whose batch cannot fit in ``device``'s free memory (a checkpoint's patch
    of thousands of voxels a side would otherwise ask for tens of GiB and fail deep inside)."""
    needed = tile_memory_floor(patch, channels, features, batch_size)
    free = available_memory_bytes(device)
    if free is not None and needed > free:
        raise FmcConfigError(f"patch={list(patch)}: a batch of {batch_size} such tiles needs at "
                             f"least {needed / 2**30:.1f} GiB, more than the {free / 2**30:.1f} "
                             f"GiB free on {device}; give a smaller patch=[Z, Y, X]")
