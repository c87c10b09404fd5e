"""fmc's volumes open in ImageJ with their voxel size: the reader's conditions always, and ImageJ
1.x itself (`apt-get install imagej xvfb xauth`) when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fmc.io.metadata import VolumeMeta
from fmc.io.tiff import write_volume
from tests.conftest import assert_imagej_readable

SPACING = (2.0, 0.5, 0.5)
IJ_JAR = Path("/usr/share/java/ij.jar")
# Print what ImageJ read: size, bit depth and calibration (an ImageJ macro).
PROBE = """path = getArgument();
open(path);
getDimensions(w, h, c, s, f);
getVoxelSize(vw, vh, vd, unit);
print("read " + w + "x" + h + "x" + s + " bits=" + bitDepth() + " voxel=" + vw + "," + vh + "," + vd);
"""


def volume(dtype) -> np.ndarray:
    return (np.random.default_rng(0).random((12, 70, 90)) * 1000).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_untiled_volumes_meet_the_imagej_reader(tmp_path: Path, dtype):
    path = write_volume(tmp_path / "v.tif", volume(dtype), VolumeMeta(spacing_zyx=SPACING), tile=None)
    assert_imagej_readable(path, SPACING)


def test_tiled_volumes_do_not(tmp_path: Path):
    path = write_volume(tmp_path / "v.tif", volume(np.uint16), VolumeMeta(spacing_zyx=SPACING))
    with pytest.raises(AssertionError, match="tiles"):
        assert_imagej_readable(path, SPACING)


@pytest.mark.slow
@pytest.mark.skipif(not (IJ_JAR.is_file() and shutil.which("xvfb-run") and shutil.which("java")),
                    reason="ImageJ 1.x, xvfb-run and java are not installed")
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_imagej_opens_untiled_volumes_with_their_voxel_size(tmp_path: Path, dtype):
    # (A tiled file makes ImageJ answer "Unsupported format or file not found" in a dialog that
    # never closes in batch mode: the reader conditions above cover that case.)
    path = write_volume(tmp_path / "v.tif", volume(dtype), VolumeMeta(spacing_zyx=SPACING),
                        tile=None)
    macro = tmp_path / "probe.ijm"
    macro.write_text(PROBE)
    result = subprocess.run(["xvfb-run", "-a", "java", "-jar", str(IJ_JAR), "-batch", str(macro),
                             str(path)], capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    bits = 16 if dtype == np.uint16 else 32
    expected = f"read 90x70x12 bits={bits} voxel=0.5,0.5,2"
    assert expected in output, output
