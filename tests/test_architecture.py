"""The layout rule of docs/design.md: stage packages in pipeline order, imports only backwards.

A module of a stage package may import ``fmc.core``, ``fmc.io`` and the packages of earlier
stages; never a later stage and never a command module (``fmc.train``, ``fmc.predict``, ...).
The command modules at the top of ``fmc/`` are thin and may import any stage.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

FMC = Path(__file__).resolve().parent.parent / "fmc"
# Pipeline order; a package may import those before it (and itself).
STAGES = ("core", "io", "simulation", "preprocessing", "data", "models", "inference", "evaluation",
          "training", "reporting")
COMMANDS = ("train", "predict", "evaluate", "prepare", "synth", "report", "challenge",
            "registry", "export", "view")
MAX_LINES = 400


def fmc_imports(path: Path) -> set[str]:
    """Every ``fmc.*`` module named by an import anywhere in ``path`` (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fmc":
                found.update(f"fmc.{alias.name}" for alias in node.names)
            elif node.module.startswith("fmc."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fmc."))
    return found


def stage_modules() -> list[tuple[str, Path]]:
    return [(path.relative_to(FMC).parts[0], path) for stage in STAGES
            for path in sorted((FMC / stage).rglob("*.py"))]


def test_every_module_lives_in_a_stage_package_or_is_a_command():
    top = sorted(p.stem for p in FMC.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert top == sorted(COMMANDS)
    packages = sorted(p.name for p in FMC.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_earlier_stages(stage):
    allowed = set(STAGES[:STAGES.index(stage) + 1])
    wrong = []
    for _, path in [(s, p) for s, p in stage_modules() if s == stage]:
        for name in fmc_imports(path):
            parts = name.split(".")
            target = parts[1]
            if name == "fmc.__version__":
                continue
            if target not in allowed:
                wrong.append(f"{path.relative_to(FMC.parent)} imports {name}")
    assert not wrong, "imports against the pipeline order:\n" + "\n".join(wrong)


def test_command_modules_are_thin():
    for verb in COMMANDS:
        lines = (FMC / f"{verb}.py").read_text().splitlines()
        assert len(lines) <= 100, f"fmc/{verb}.py has {len(lines)} lines: move logic to a stage"


def test_no_module_is_too_long():
    long = [f"{p.relative_to(FMC.parent)}: {n}" for p in FMC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def test_every_cited_document_is_in_the_repository():
    """Code, configs and docs cite only files inside the repository (docs/design.md, not a
    document elsewhere)."""
    repo = FMC.parent
    texts = [p for pattern in ("fmc/**/*.py", "conf/**/*.yaml", "docs/*.md", "scripts/*.py",
                               "tests/*.py", "README.md", "Dockerfile", "Makefile")
             for p in repo.glob(pattern)]
    missing = []
    for path in texts:
        if path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, path
        for cited in re.findall(r"\b(docs/[\w./-]+?\.(?:md|png|jsonl))\b", text):
            if not (repo / cited).is_file():
                missing.append(f"{path.relative_to(repo)} cites {cited}")
    assert not missing, "\n".join(missing)


def test_tests_mirror_the_stage_packages():
    folders = sorted(p.name for p in (FMC.parent / "tests").iterdir()
                     if p.is_dir() and (p / "__init__.py").is_file())
    assert set(folders) <= set(STAGES), folders
