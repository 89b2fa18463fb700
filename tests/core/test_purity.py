"""The core never touches I/O, clocks or threads: it only imports pure modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import zcluster

PACKAGE = Path(zcluster.__file__).resolve().parent
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "selectors", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts)
    if candidate.with_suffix(".py").exists():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").exists():
        return candidate / "__init__.py"
    return None


def core_closure() -> dict[str, set[str]]:
    """Every zcluster module the core reaches, with its direct imports."""
    todo = [
        f"zcluster.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"
    ]
    seen: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        assert path is not None, name
        seen[name] = imported_modules(path)
        todo.extend(m for m in seen[name] if m.startswith("zcluster.") and module_path(m))
    return seen


def test_core_and_what_it_imports_stay_pure() -> None:
    closure = core_closure()
    assert "zcluster.core.node" in closure and "zcluster.wire" in closure
    for module, imports in closure.items():
        bad = {m for m in imports if m.split(".")[0] in FORBIDDEN}
        assert not bad, f"{module} imports {sorted(bad)}"
        assert not any(m.startswith("zcluster.runtime") for m in imports), module


def test_core_runs_without_io_modules_loaded() -> None:
    """Importing the core alone (not the package's public surface) loads none of them."""
    code = (
        "import sys, types\n"
        "before = set(sys.modules)\n"
        f"sys.path.insert(0, {str(PACKAGE.parent)!r})\n"
        "pkg = types.ModuleType('zcluster'); pkg.__path__ = [" + repr(str(PACKAGE)) + "]\n"
        "sys.modules['zcluster'] = pkg\n"
        "import zcluster.core.node\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
