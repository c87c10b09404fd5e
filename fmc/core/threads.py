"""How many threads fmc's numpy and scipy work uses (they release the GIL, so threads use cores)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may use (at most 8): the thread count of fmc's numpy/scipy work."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))
