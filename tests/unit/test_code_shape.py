"""The code keeps the shape docs/architecture.md describes: one-way layers, functions a reader can hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "xasflow"
MAX_COMPLEXITY = 15


def _blocks(path: Path):
    for block in cc_visit(path.read_text()):
        yield block
        yield from getattr(block, "methods", [])


def test_no_function_above_the_complexity_limit():
    too_complex = [
        f"{path.relative_to(ROOT)}:{block.lineno} {block.name} ({block.complexity})"
        for path in sorted(SOURCE.rglob("*.py"))
        for block in _blocks(path)
        if block.complexity > MAX_COMPLEXITY and type(block).__name__ == "Function"
    ]
    assert not too_complex, "cyclomatic complexity above 15: " + "; ".join(too_complex)


def test_the_layers_import_one_way():
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout
