"""The package import DAG (issue 12): ``pcgnet`` and ``extractors`` import nothing of ours, ``stream`` may
import both, ``prepare`` (dataset preparation and the full ``pcgnet`` command) may import all three, and no
shipped package imports the test or benchmark code.

Every import is read with ``ast`` from the source, including function-level imports (the ones that made the
three packages one cycle) and relative imports, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = ("pcgnet", "extractors", "stream", "prepare", "tests", "benchmarks")
"""Top-level names that are this repository's code (anything else is a third-party or stdlib import)."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    "pcgnet": frozenset({"pcgnet"}),
    "extractors": frozenset({"extractors"}),
    "stream": frozenset({"stream", "pcgnet", "extractors"}),
    "prepare": frozenset({"prepare", "stream", "pcgnet", "extractors"}),
}
"""Shipped package -> the packages of ours it may import."""

KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()
"""(importing module, imported module) pairs tolerated against the rules: none. An entry whose import is gone
fails the test as a new violation does."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports anywhere in its body, relative imports resolved to absolute names.

    ``from pkg import name`` counts as ``pkg.name`` when that is one of our modules, else as ``pkg``.
    """
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if _is_module(sub, root) or not base else base)
    return found


def _is_module(name: str, root: Path) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def violations(root: Path = ROOT) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((root / package).rglob("*.py")):
            importer = module_name(path, root)
            for imported in imported_modules(path, root):
                top = imported.split(".")[0]
                if top in OURS and top not in allowed:
                    out.add((importer, imported))
    return out


def test_the_checker_finds_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    """A tree with one violation of each kind the real code had: all are found, allowed imports are not."""
    files = {
        "pcgnet/__init__.py": "",
        "pcgnet/model.py": "import torch\nfrom pcgnet import config\n",
        "pcgnet/config.py": "def f():\n    from extractors.text import X  # lazy, inside a function\n",
        "extractors/__init__.py": "",
        "extractors/text.py": "import os\nfrom stream import record\n",
        "stream/__init__.py": "",
        "stream/record.py": "from pcgnet.model import PCGNet\nfrom extractors import text\n",
        "stream/testing.py": "from .record import X\nfrom tests.support import broker\n",
        "tests/support/broker.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == {
        ("pcgnet.config", "extractors.text"),
        ("extractors.text", "stream.record"),
        ("stream.testing", "tests.support.broker"),
    }


def test_packages_form_a_dag() -> None:
    found = violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, ("imports against the package DAG (pcgnet and extractors import nothing of ours; stream "
                     f"may import both; nothing shipped imports tests/benchmarks): {new}")
    assert not gone, f"allow-listed violations no longer exist; remove them from KNOWN_VIOLATIONS: {gone}"
