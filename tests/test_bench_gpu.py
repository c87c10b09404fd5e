"""scripts/bench_gpu.py runs end to end (``--smoke``: tiny sizes on the CPU), so the one GPU
session that runs it for real does not fail on a typo; its table goes between the markers of
docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_gpu.py"

@pytest.mark.slow  # four tiny fits (one compiled), two predictions, MONAI: about two minutes
def test_the_smoke_run_prints_every_section(tmp_path: Path):
    pytest.importorskip("monai")
    rows = tmp_path / "rows.jsonl"
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu",
                             "--json", str(rows)], capture_output=True, text=True, timeout=900,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout
    for section in ("| train |", "| loader |", "| predict |", "| monai |", "| budget |"):
        assert section in table, section
    assert "study 5 309×1920×1920" in table and "steps/s" in table and "fmc/MONAI" in table
    # train: 5 variants (batch 1 only); loader: 2 worker counts; predict: 2 sizes; MONAI: 1; budget: 5 studies
    assert len(rows.read_text().splitlines()) == 5 + 2 + 2 + 1 + 5


def test_the_table_replaces_its_block_in_the_docs(tmp_path: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # its dataclasses look themselves up
    spec.loader.exec_module(bench)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\ntext\n")
    monkeypatch.setattr(bench, "DOCS", docs)
    bench.write_docs("first table")
    bench.write_docs("second table")
    text = docs.read_text()
    assert text.count(bench.MARK_START) == 1 and "second table" in text
    assert "first table" not in text and text.startswith("# Benchmarks\n\ntext\n")


def test_kept_rows_print_the_same_table_in_section_order(tmp_path: Path, monkeypatch):
    """``--rows`` reprints a table from the JSON lines a (possibly cut) run kept."""
    import json

    rows = tmp_path / "rows.jsonl"
    facts = {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "date": "2026-12-04"}
    records = [{"section": "predict", "what": "study 1-sized, amp=none", "value": "24.7 s",
                "peak_gb": 4.8, "note": ""},
               {"section": "train", "what": "bf16-mixed, batch 1", "value": "9.79 steps/s",
                "peak_gb": 4.3, "note": ""}]
    rows.write_text("".join(json.dumps({**record, **facts}) + "\n" for record in records))
    result = subprocess.run([sys.executable, str(SCRIPT), "--rows", str(rows)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("GPU: **NVIDIA H200**, torch 2.11.0+cu130, 2026-12-04")
    table = [line for line in lines if line.startswith("| train") or line.startswith("| predict")]
    assert table == ["| train | bf16-mixed, batch 1 | 9.79 steps/s | 4.3 GiB |  |",
                     "| predict | study 1-sized, amp=none | 24.7 s | 4.8 GiB |  |"]
