"""scripts/benchtools.py: the one test-volume generator of the benchmark scripts, and the helpers
they share instead of writing them again."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


@pytest.fixture(scope="module")
def benchtools():
    spec = importlib.util.spec_from_file_location("benchtools", SCRIPTS / "benchtools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_phantom_has_the_shape_asked_for_and_is_the_same_per_seed(benchtools):
    shape = (37, 48, 40)  # more than one block of planes, the last one partial
    volume = benchtools.phantom(shape, seed=3)
    assert volume.shape == shape and volume.dtype == np.uint16
    assert np.array_equal(volume, benchtools.phantom(shape, seed=3))
    assert not np.array_equal(volume, benchtools.phantom(shape, seed=4))
    # A bright specimen in the middle on a dim, noisy background (not a constant).
    centre = volume[15:22, 20:28, 17:23]
    assert centre.min() > 500 and volume[0, :4, :4].max() < 200
    assert len(np.unique(volume[0])) > 10


def test_the_degraded_view_is_dimmer_noisier_and_the_same_per_seed(benchtools):
    target = benchtools.phantom((20, 32, 32), seed=1)
    view = benchtools.degraded(target, seed=2)
    assert view.shape == target.shape and view.dtype == np.uint16
    assert np.array_equal(view, benchtools.degraded(target, seed=2))
    assert view.mean() < target.mean() and not np.array_equal(view, target)


def test_tables_rows_and_budgets(benchtools, tmp_path: Path):
    assert benchtools.markdown_table(("a", "b"), [(1, ""), ("x", 2)]) == \
        "| a | b |\n|---|---|\n| 1 |  |\n| x | 2 |"
    assert benchtools.dims((222, 731, 860)) == "222×731×860"
    assert benchtools.max_time(5 * 60) == "00:00:05:00"
    assert benchtools.max_time(3725) == "00:01:02:05"
    rows = tmp_path / "rows.jsonl"
    assert benchtools.read_jsonl(rows) == []
    benchtools.append_jsonl(rows, {"a": 1})
    benchtools.append_jsonl(rows, {"b": [2]})
    assert benchtools.read_jsonl(rows) == [{"a": 1}, {"b": [2]}]


def test_a_marked_block_is_replaced_or_appended(benchtools, tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\ntext\n")
    for body in ("one", "two"):
        benchtools.write_marked_block(doc, "<!-- s -->", "<!-- e -->", body, "## Section")
    assert doc.read_text() == "# Doc\n\ntext\n\n## Section\n\n<!-- s -->\ntwo\n<!-- e -->\n"


def _script_trees() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text()) for path in sorted(SCRIPTS.glob("*.py"))
            if path.name != "benchtools.py"}


def test_no_script_makes_its_own_volumes_or_repeats_a_shared_helper(benchtools):
    """Random uint16 volumes come from benchtools.phantom (or fmc.simulation); no script defines
    a function of benchtools' again."""
    shared = {node.name for node in ast.parse((SCRIPTS / "benchtools.py").read_text()).body
              if isinstance(node, ast.FunctionDef)}
    assert {"phantom", "degraded", "save_module", "run_logged", "markdown_table"} <= shared
    generators, repeated = [], []
    for name, tree in _script_trees().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            if node.name in shared:
                repeated.append(f"{name}: {node.name}")
            words = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if "default_rng" in words and "uint16" in words:  # a random uint16 volume
                generators.append(f"{name}: {node.name}")
    assert not generators, f"volume generators outside benchtools: {generators}"
    assert not repeated, f"benchtools' helpers defined again: {repeated}"


@pytest.mark.parametrize("script", ["bench_gpu.py", "bench_predict.py", "bench_metrics.py"])
def test_the_benchmarks_of_cheap_volumes_import_the_phantom(script):
    imported = {alias.name for node in ast.walk(ast.parse((SCRIPTS / script).read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == "benchtools"
                for alias in node.names}
    assert "phantom" in imported


def test_the_study_list_is_the_librarys(monkeypatch):
    """bench_loso holds out the embedded studies that fmc.core.studies defines."""
    from fmc.core.studies import EMBEDDED_STUDIES

    spec = importlib.util.spec_from_file_location("bench_loso", SCRIPTS / "bench_loso.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_loso", bench)
    spec.loader.exec_module(bench)
    assert bench.EMBEDDED_STUDIES is EMBEDDED_STUDIES and not hasattr(bench, "STUDIES")
