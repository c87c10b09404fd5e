"""Size measures of fmc's code, for docs/design.md ("Measured"): the longest functions, the
longest modules, and how many modules there are, in the working tree or at a git revision.

Usage::

    python scripts/code_metrics.py                 # the working tree
    python scripts/code_metrics.py --rev 7d07b7f   # a commit (read with git show, nothing checked out)
    python scripts/code_metrics.py --rev 7d07b7f --rev HEAD --top 10   # side by side

A function's length is its code lines: from ``def`` (decorators included) to its last line, as
:mod:`ast` reports them, less its docstring (numpy docstrings make well-documented functions look
long); nested functions count inside their parent too. The whole span is shown beside it.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(rev: str | None) -> dict[str, str]:
    """``{path: text}`` of every ``fmc/**/*.py`` in the working tree or at ``rev``."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                for p in sorted((ROOT / "fmc").rglob("*.py"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "fmc"],
                           check=True, capture_output=True, text=True).stdout.split()
    return {name: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{name}"], check=True,
                                 capture_output=True, text=True).stdout
            for name in names if name.endswith(".py")}


def functions(files: dict[str, str]) -> list[tuple[int, int, str]]:
    """``(code lines, all lines, "path:name")`` of every function and method, longest first."""
    found = []
    for path, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                span = node.end_lineno - first + 1
                head = node.body[0]
                docstring = head.end_lineno - head.lineno + 1 if (
                    isinstance(head, ast.Expr) and isinstance(head.value, ast.Constant)
                    and isinstance(head.value.value, str)) else 0
                found.append((span - docstring, span, f"{path}:{node.name}"))
    return sorted(found, reverse=True)


def summary(rev: str | None, top: int) -> list[str]:
    files = sources(rev)
    lengths = sorted(((len(t.splitlines()), p) for p, t in files.items()), reverse=True)
    longest = functions(files)[:top]
    label = rev or "working tree"
    return [f"## {label}: {len(files)} modules, {sum(n for n, _ in lengths)} lines; longest "
            f"module {lengths[0][1]} ({lengths[0][0]} lines)", "",
            f"| # | code lines | with docstring | function ({label}) |", "|---|---|---|---|",
            *(f"| {i} | {code} | {span} | `{name}` |"
              for i, (code, span, name) in enumerate(longest, 1)), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", help="git revision (repeatable); none: the "
                        "working tree")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    for rev in args.rev or [None]:
        print("\n".join(summary(rev, args.top)))


if __name__ == "__main__":
    main()
