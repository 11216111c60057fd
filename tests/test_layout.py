"""The shape of the package (the architecture issue): rules a reviewer would otherwise check by hand."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gags_ros"
MAX_FUNCTION_LINES = 80


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_longer_than_80_lines():
    long = [f"{p.relative_to(PACKAGE.parent)}:{line} {name} ({n} lines)"
            for p in sorted(PACKAGE.rglob("*.py")) for name, line, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert not long, "split these into steps with names:\n" + "\n".join(long)


def test_the_rule_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    f = tmp_path / "m.py"
    f.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert [(name, n) for name, _, n in _functions(f)] == [("long", MAX_FUNCTION_LINES + 1), ("short", 2)]
