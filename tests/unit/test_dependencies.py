"""Every package the code imports is declared in pyproject.toml: the product's imports in
`dependencies` or an optional extra, the tests' and benchmarks' there or in the `test` extra
(which installs the other extras too). A package
that only this machine happens to have would otherwise pass here and fail for a new user."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.paths import ROOT

OURS = {"mailsupport", "tests", "bench"}


def declared(requirements: list[str]) -> set[str]:
    names = (re.match(r"[A-Za-z0-9._-]+", r.strip()) for r in requirements)
    return {normalise(m.group(0)) for m in names if m}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# The product may import an optional extra's packages (e.g. `oauth`) where that feature
# needs them: mailsupport/oauth/grants.py turns their absence into one clear error.
PRODUCT = declared(PROJECT["dependencies"]) | {
    name for extra, packages in EXTRAS.items() if extra != "test" for name in declared(packages)
}
TESTS = PRODUCT | declared(EXTRAS["test"])


def _optional(node: ast.Try) -> bool:
    """A try block whose handler catches ImportError: the import may fail by design."""
    caught = [h.type for h in node.handlers]
    names = {n.id for t in caught if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """The top-level module of every absolute import in a file, with its line, except
    those inside a try that expects them to be missing."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and _optional(node):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno


def distributions(module: str) -> set[str]:
    return {normalise(d) for d in _owners().get(module, [])}


@functools.cache
def _owners() -> Mapping[str, list[str]]:
    """Each importable name's distributions: read once (it walks every installed one)."""
    return importlib.metadata.packages_distributions()


def undeclared(folder: str, allowed: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module, line in imports(path):
            if module in OURS or module in sys.stdlib_module_names or module == "__future__":
                continue
            owners = distributions(module)
            if not owners & allowed:
                where = f"{path.relative_to(ROOT)}:{line}"
                found.append(f"{where} imports {module} ({', '.join(owners) or 'not installed'})")
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("folder", "allowed"), [("mailsupport", PRODUCT), ("tests", TESTS), ("bench", TESTS)]
)
def test_every_import_is_declared(folder: str, allowed: set[str]) -> None:
    assert undeclared(folder, allowed) == []


def test_the_check_sees_an_undeclared_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself works: a module importing click (which typer no longer installs)
    and a guarded optional import."""
    (tmp_path / "mailsupport").mkdir()
    (tmp_path / "mailsupport" / "m.py").write_text(
        "import json\nimport typer\nfrom click.testing import Result\n"
        "try:\n    import passlib\nexcept ImportError:\n    passlib = None\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    [problem] = undeclared("mailsupport", PRODUCT)
    assert problem.startswith("mailsupport/m.py:3 imports click")
