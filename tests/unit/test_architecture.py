"""The shape of the code, as docs/architecture.md describes it, checked from the source.

Imports are read with `ast`, including those inside functions and under TYPE_CHECKING: a
cycle that only a function-local import closes is still a cycle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "mailsupport"
MAX_LINES = 600

# Intake (mail in: sources, parsing, threading, the pipeline, acknowledgements queued) and
# delivery (mail out: SMTP, Sent copies) meet only at the outbox's queue in the database.
INTAKE = ("mailsupport.pipeline", "mailsupport.poll", "mailsupport.sources")
DELIVERY = (
    "mailsupport.outbox.delivery",
    "mailsupport.outbox.smtp",
    "mailsupport.outbox.sentcopies",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def imports(name: str, path: Path, known: dict[str, Path], parents: bool) -> set[str]:
    """The mailsupport modules `name` imports, anywhere in it; with `parents`, also the
    packages those belong to, which Python runs first."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target:  # importing a.b.c runs a and a.b first
                if target != name:
                    found.add(target)
                target = target.rpartition(".")[0] if parents else ""
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known, parents=False) for name, path in known.items()}


@pytest.fixture(scope="module")
def loads() -> dict[str, set[str]]:
    """What importing each module runs: its imports and their packages' __init__ modules."""
    known = modules()
    return {name: imports(name, path, known, parents=True) for name, path in known.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_import_reader_sees_cycles() -> None:
    made = {"a.x": {"a.y"}, "a.y": {"a.x"}, "a.z": {"a.x"}}
    assert "a.x" in reachable(made, "a.x")
    assert "a.z" not in reachable(made, "a.x")


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_intake_never_imports_delivery_and_delivery_never_imports_intake(
    loads: dict[str, set[str]],
) -> None:
    def under(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    for name in loads:
        if under(name, INTAKE):
            wrong = {m for m in reachable(loads, name) if under(m, DELIVERY)}
            assert not wrong, f"{name} (intake) imports delivery: {sorted(wrong)}"
        if under(name, DELIVERY):
            wrong = {m for m in reachable(loads, name) if under(m, INTAKE)}
            assert not wrong, f"{name} (delivery) imports intake: {sorted(wrong)}"


SQL_CALLS = {"exec", "execute", "scalar", "scalars"}


def test_the_cli_runs_no_sql_and_opens_no_session() -> None:
    problems = []
    for path in (PACKAGE / "cli").rglob("*.py"):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "sqlmodel",
                "sqlalchemy",
            ):
                names = {a.name for a in node.names}
                if node.module != "sqlalchemy.engine" or names != {"make_url"}:
                    problems.append(f"{where}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] in ("sqlmodel", "sqlalchemy") for a in node.names
            ):
                problems.append(f"{where}:{node.lineno} imports the database library")
            call = node.func if isinstance(node, ast.Call) else None
            if isinstance(call, ast.Attribute) and call.attr in SQL_CALLS:
                problems.append(f"{where}:{node.lineno} runs .{call.attr}()")
            if isinstance(node, ast.With):
                for item in node.items:
                    expr = item.context_expr
                    if (
                        isinstance(expr, ast.Call)
                        and isinstance(expr.func, ast.Attribute)
                        and expr.func.attr in ("read", "write")
                    ):
                        problems.append(f"{where}:{node.lineno} opens a transaction")
    assert not problems, "\n".join(problems)
