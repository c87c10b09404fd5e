"""Helpers shared by the benchmark scripts: measuring a command, describing the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time


def machine() -> str:
    """One line: architecture, cores, RAM, Python."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and output (stdout + stderr) of one child process.

    ``os.wait4`` gives the rusage of that child (and of its own reaped children, as a maximum).
    Linux carries the high-water mark across fork and exec, so the figure includes the caller's
    RSS at fork time: callers keep no volume in memory while they run the measured command.
    Exits with the command's output if it fails.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        output.seek(0)
        text = output.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(text)
    return seconds, usage.ru_maxrss / 1024**2, text
