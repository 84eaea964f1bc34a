"""Rewrite (or, with ``--check``, find) imports of the orchestration packages by their bare names.

The repository keeps ``flows/``, ``tasks/``, ``schemas/`` and ``phantoms/`` at the top level (the
product card's layout); the wheel installs them inside the one top-level package, as
``concordose.flows``, ``concordose.tasks``, ``concordose.schemas`` and ``concordose.phantoms``
(``concordose/flows`` and the others are symlinks to the top-level folders; issue 19 item 4).
Code must therefore import them by their installed names: a bare ``import flows`` works only from
a checkout, and would load a second copy of every module under another name.

Run: ``.venv/bin/python scripts/namespace_imports.py [--check] [PATH ...]`` (default: the
repository). Without ``--check`` it rewrites, in every ``.py`` file:
  ``from flows.x import y``            → ``from concordose.flows.x import y``
  ``import flows.x as m``              → ``import concordose.flows.x as m``
  ``import flows`` / ``import flows as m`` → ``from concordose import flows`` / ``… as m``,
  a string naming one as a module (``files("schemas")``, ``import_module("flows.sweep")``,
  ``monkeypatch.setattr("tasks.report.f", …)``), and ``python -m`` of one of them in text (also
in ``.md`` files); then it sorts and formats the changed files with ruff (a rewritten docstring
line may still need wrapping by hand: ruff check says where). ``import flows.x`` without ``as``
and several names in one ``import`` statement are reported, not rewritten (the bound name would
change). With ``--check`` nothing is written; each finding is printed and the exit status is 1 if
there is any (``tests/unit/test_namespace_imports.py`` runs it, so no bare import creeps back).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "concordose"
PACKAGES = ("flows", "tasks", "schemas", "phantoms")
REPOSITORY = Path(__file__).resolve().parents[1]
# Folders never scanned: tool state, build output and the symlinks concordose/<package> (os.walk
# does not follow them, so the top-level folders are scanned once).
SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "build", "dist", "node_modules", "__pycache__"})

_NAMES = "|".join(PACKAGES)
# A whole string that names one of the packages as a module, optionally ``:attribute``.
_MODULE_STRING = re.compile(rf"(?:{_NAMES})(?:\.[A-Za-z_]\w*)*(?::[\w.]+)?")
_PYTHON_M = re.compile(rf"(python3? -m )({_NAMES})\b")
# Calls whose string argument is a module (or package) name, even undotted…
_MODULE_CALLS = frozenset({"files", "import_module", "find_spec", "import_object", "as_file"})
# …and calls whose string argument is a dotted attribute path (``module.attribute``).
_DOTTED_CALLS = frozenset({"setattr", "delattr", "patch"})


@dataclass(frozen=True)
class Finding:
    """One bare name at ``line`` of ``path``; ``replacement`` is None when it needs a person."""

    path: Path
    line: int
    text: str
    replacement: str | None

    def describe(self) -> str:
        """One line: where, what, and what it becomes (or why it is not rewritten)."""
        fix = (
            f"→ {self.replacement}"
            if self.replacement is not None
            else "(not rewritten: rewrite by hand, it binds a different name)"
        )
        shown = (
            self.path.relative_to(Path.cwd()) if self.path.is_relative_to(Path.cwd()) else self.path
        )
        return f"{shown}:{self.line}: {self.text} {fix}"


@dataclass(frozen=True)
class _Edit:
    start: int  # byte offsets into the UTF-8 source
    end: int
    replacement: str


def _is_bare(module: str | None) -> bool:
    return module is not None and module.split(".", 1)[0] in PACKAGES


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _import_replacement(node: ast.Import) -> str | None:
    """The statement that binds the same name to the installed module, or None (by hand)."""
    if len(node.names) != 1:
        return None
    alias = node.names[0]
    if "." not in alias.name:
        bound = f" as {alias.asname}" if alias.asname else ""
        return f"from {NAMESPACE} import {alias.name}{bound}"
    if alias.asname is None:
        return None
    return f"import {NAMESPACE}.{alias.name} as {alias.asname}"


def _string_edits(tree: ast.AST) -> Iterator[tuple[ast.Constant, str, str]]:
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        name = _call_name(call.func)
        if name not in _MODULE_CALLS and name not in _DOTTED_CALLS:
            continue
        for argument in call.args:
            if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
                continue
            value = argument.value
            if not _MODULE_STRING.fullmatch(value):
                continue
            if name in _DOTTED_CALLS and "." not in value:
                continue
            yield argument, value, f"{NAMESPACE}.{value}"


def scan(path: Path, source: str) -> tuple[list[Finding], str]:
    """Every bare name in one file's ``source``, and the source with the rewritable ones fixed."""
    raw = source.encode("utf-8")
    line_starts = [0]
    for source_line in raw.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(source_line))

    def offset(line: int, column: int) -> int:
        return line_starts[line - 1] + column  # ast columns are UTF-8 byte offsets

    def segment(node: ast.stmt | ast.expr) -> tuple[int, int]:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        return offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)

    findings: list[Finding] = []
    edits: list[_Edit] = []
    tree = ast.parse(source, filename=str(path)) if path.suffix == ".py" else None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import) and any(_is_bare(a.name) for a in node.names):
            start, end = segment(node)
            text = raw[start:end].decode("utf-8")
            new = _import_replacement(node)
            findings.append(Finding(path, node.lineno, text, new))
            if new is not None:
                edits.append(_Edit(start, end, new))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_bare(node.module):
            start, end = segment(node)
            text = raw[start:end].decode("utf-8")
            keyword = re.match(rb"from\s+", raw[start:end])
            assert keyword is not None
            assert node.module is not None
            name_start = start + keyword.end()
            name_end = name_start + len(node.module.encode("utf-8"))
            new = f"{NAMESPACE}.{node.module}"
            findings.append(Finding(path, node.lineno, text.splitlines()[0], f"from {new} …"))
            edits.append(_Edit(name_start, name_end, new))
    for constant, old, new in _string_edits(tree) if tree is not None else ():
        start, end = segment(constant)
        quote = raw[start:end].decode("utf-8")
        findings.append(Finding(path, constant.lineno, quote, quote.replace(old, new)))
        edits.append(_Edit(start, end, quote.replace(old, new)))

    edited = raw
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        edited = edited[: edit.start] + edit.replacement.encode("utf-8") + edited[edit.end :]
    text = edited.decode("utf-8")
    for command in _PYTHON_M.finditer(text):
        line = text.count("\n", 0, command.start()) + 1
        findings.append(Finding(path, line, command.group(0), f"{command.group(1)}{NAMESPACE}.…"))
    text = _PYTHON_M.sub(rf"\g<1>{NAMESPACE}.\g<2>", text)
    return sorted(findings, key=lambda f: f.line), text


def source_files(roots: Sequence[Path]) -> Iterator[Path]:
    """The ``.py`` and ``.md`` files under ``roots`` (symlinked folders not followed)."""
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(
                d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")
            )
            for name in sorted(files):
                if name.endswith((".py", ".md")):
                    yield Path(folder, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` list) bare imports; 1 if ``--check`` found any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="report only; exit 1 on findings")
    parser.add_argument("paths", nargs="*", type=Path, default=[REPOSITORY])
    arguments = parser.parse_args(argv)

    changed: list[Path] = []
    by_hand = 0
    found = 0
    for path in source_files(arguments.paths):
        source = path.read_text(encoding="utf-8")
        findings, rewritten = scan(path, source)
        for finding in findings:
            print(finding.describe())
        found += len(findings)
        by_hand += sum(f.replacement is None for f in findings)
        if not arguments.check and rewritten != source:
            path.write_text(rewritten, encoding="utf-8")
            changed.append(path)
    if arguments.check:
        return 1 if found else 0
    python_files = [str(p) for p in changed if p.suffix == ".py"]
    if python_files:  # the longer names change import order and line lengths
        ruff = [sys.executable, "-m", "ruff"]
        # check=False: --fix exits 1 when something it cannot fix remains; ruff check shows it
        subprocess.run(
            [*ruff, "check", "--quiet", "--select", "I", "--fix", *python_files], check=False
        )
        subprocess.run([*ruff, "format", "--quiet", *python_files], check=True)
    print(f"{len(changed)} files rewritten; {by_hand} findings to rewrite by hand")
    return 1 if by_hand else 0


if __name__ == "__main__":
    sys.exit(main())
