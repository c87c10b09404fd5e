"""``python -m fmc.registry export SWEEP_OR_MODELS out=models.zip``: a model package to share.

SWEEP_OR_MODELS is a training sweep's folder (each run's best checkpoint) or a folder with a
``models.yaml``; the zip holds the checkpoints, their sha256 in ``models.yaml`` and a model card
(:mod:`fmc.inference.packages`). ``fmc.predict ckpt=auto registry=models.zip`` (or its URL) and
``fmc.challenge registry=...`` read it. ``out=`` is refused (exit 2, nothing written) when it is
one of the source's checkpoints or its ``models.yaml`` (by any spelling), a folder, under a file,
or an existing file that is not a model package; a failed export leaves what was there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fmc.core.cli import report_user_errors
from fmc.core.errors import FmcConfigError

USAGE = "usage: python -m fmc.registry export SWEEP_OR_MODELS out=models.zip"


@report_user_errors("fmc.registry")
def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``export SOURCE out=ZIP`` (any order after ``export``) and write the package."""
    from fmc.inference.packages import export_package

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "export":
        raise FmcConfigError(USAGE)
    keys = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    sources = [a for a in args[1:] if "=" not in a] + ([keys.pop("source")] if "source" in keys
                                                       else [])
    if len(sources) != 1 or "out" not in keys or set(keys) - {"out"}:
        raise FmcConfigError(USAGE)
    written = export_package(sources[0], keys["out"])
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
