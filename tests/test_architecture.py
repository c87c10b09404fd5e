"""The layout rule of docs/design.md: stage packages in pipeline order, imports only backwards.

A module of a stage package may import ``fmc.core``, ``fmc.io`` and the packages of earlier
stages; never a later stage and never a command module (``fmc.train``, ``fmc.predict``, ...).
The command modules at the top of ``fmc/`` are thin and may import any stage. Between modules
the import graph has no cycle, not even through an import inside a function.
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


def module_name(path: Path, package: Path = FMC) -> str:
    """``fmc.inference.export`` for ``fmc/inference/export.py``; ``fmc.inference`` for its
    ``__init__.py`` (a package's re-exports are a node of their own)."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = FMC) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of ``package`` it imports, anywhere in its text
    (an import inside a function is a dependency all the same).

    ``import a.b``, ``from a.b import name`` and ``from a import b`` (``b`` a module) name the
    module ``a.b``; ``from a.b import name`` (``name`` not a module) names ``a.b`` itself.
    """
    paths = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    root = package.name

    def known(name: str) -> str | None:  # the module itself, or the package that holds it
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from ..x import y
                    anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                named.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                             for alias in node.names)
        graph[name] = {target for n in named if (n == root or n.startswith(root + "."))
                       and (target := known(n)) and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle, ``a -> b -> a``, for each way back to a module met by a depth-first walk of
    ``graph``: empty exactly when the graph is acyclic."""
    cycles, done, path = [], set(), []

    def visit(name: str) -> None:
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return cycles


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


def test_the_import_graph_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "sub/__init__.py": "from pkg.sub.c import C\n",
             "a.py": "import os\ndef f():\n    from pkg import b\n",
             "b.py": "from pkg.sub import C\nfrom . import a\n",
             "sub/c.py": "import pkg.a\nC = 1\n"}
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub", "pkg.a"},
                     "pkg.sub": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.a"}}
    assert import_cycles(graph) == ["pkg.a -> pkg.b -> pkg.a",
                                    "pkg.a -> pkg.b -> pkg.sub -> pkg.sub.c -> pkg.a"]


def test_no_module_imports_itself_through_others():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles (move what both need into a module of its own):\n" + \
        "\n".join(cycles)


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


def test_every_make_target_declared_has_a_rule_and_bench_runs_existing_scripts():
    """``.PHONY`` names only targets the Makefile defines; ``make bench`` runs scripts that exist."""
    makefile = (FMC.parent / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split()
    defined = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    assert set(phony) <= defined, sorted(set(phony) - defined)
    bench = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    scripts = re.findall(r"scripts/\w+\.py", bench)
    assert len(scripts) >= 5
    assert all((FMC.parent / script).is_file() for script in scripts), scripts
