"""No bare and no silent `except` in the package: errors are handled, logged or handed on.

A static check, so the rule holds for code that no test exercises: every handler names what it
catches; none is only `pass` / `...` / `continue`; and one that catches `Exception` or
`BaseException` must re-raise, log, or hand the exception on (use the name it bound).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "asr_assets"
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _problems(source: str, name: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, ast.ExceptHandler):
            continue
        where = f"{name}:{node.lineno}"
        if node.type is None:
            problems.append(f"{where}: bare except")
            continue
        if all(
            isinstance(s, ast.Pass | ast.Continue)
            or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in node.body
        ):
            problems.append(f"{where}: silent except")
            continue
        broad = isinstance(node.type, ast.Name) and node.type.id in {"Exception", "BaseException"}
        if not broad:
            continue
        inner = list(ast.walk(ast.Module(body=node.body, type_ignores=[])))
        handled = any(isinstance(n, ast.Raise) for n in inner) or any(
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in LOG_METHODS
            for n in inner
        )
        handed_on = node.name is not None and any(
            isinstance(n, ast.Name) and n.id == node.name for n in inner
        )
        if not (handled or handed_on):
            problems.append(f"{where}: broad except that neither re-raises, logs nor hands on")
    return problems


def test_no_bare_or_silent_excepts() -> None:
    problems = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in _problems(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert problems == []


def test_the_check_catches_what_it_should() -> None:
    code = (
        "try:\n    x = 1\nexcept:\n    x = 2\n"
        "try:\n    x = 1\nexcept ValueError:\n    pass\n"
        "try:\n    x = 1\nexcept Exception:\n    x = 3\n"
        "try:\n    x = 1\nexcept Exception as exc:\n    raise RuntimeError('x') from exc\n"
    )
    found = _problems(code, "sample.py")
    assert [p.split(": ", 1)[1] for p in found] == [
        "bare except",
        "silent except",
        "broad except that neither re-raises, logs nor hands on",
    ]
