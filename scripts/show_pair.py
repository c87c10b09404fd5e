"""Save a PNG of a pair: max projections and central planes (XY, XZ, YZ) of view vs fused.

Usage::

    .venv/bin/python scripts/show_pair.py ANGLE.tif FUSED.tif OUT.png

(``python -m fmc.synth ... png=true`` does the same for the pairs it writes.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmc.io.preview import save_pair_png  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    print(save_pair_png(*sys.argv[1:4]))
