"""The core never touches I/O, clocks or threads, nor the wire format: it only imports pure
modules. The protocol vocabulary is a leaf both the core and the wire codec build on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import zcluster

PACKAGE = Path(zcluster.__file__).resolve().parent
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "selectors", "subprocess"}
#: the codec of frames: the driver and the simulator encode, the core does not
WIRE = "zcluster.wire"


def imported_modules(name: str, source: str) -> set[str]:
    """Every module the source of module ``name`` imports, anywhere in it.

    ``from X import y`` counts as importing ``X.y`` too when that is a zcluster
    module (``from zcluster import wire``), and relative imports are resolved.
    """
    package = name if module_path(name, package_only=True) else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base:
                names.add(base)
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                if full.startswith("zcluster.") and module_path(full):
                    names.add(full)
    return names


def module_path(name: str, package_only: bool = False) -> Path | None:
    """The file of zcluster module ``name`` (a package's ``__init__.py``), if it exists."""
    if name != "zcluster" and not name.startswith("zcluster."):
        return None
    parts = name.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts)
    if not package_only and parts and candidate.with_suffix(".py").exists():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").exists():
        return candidate / "__init__.py"
    return None


def modules_of(package: str) -> list[str]:
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    return [package] + [f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"]


def closure(roots: list[str]) -> dict[str, set[str]]:
    """Every zcluster module ``roots`` reach, with its direct imports.

    The package's ``__init__`` (its public surface, which starts the runtime) is not
    followed: importing ``zcluster.x`` runs it in a normal process, but the
    subprocess tests below show the modules themselves do not need it.
    """
    todo = list(roots)
    seen: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        assert path is not None, name
        seen[name] = imported_modules(name, path.read_text())
        todo.extend(m for m in seen[name] if m.startswith("zcluster.") and module_path(m))
    return seen


def core_closure() -> dict[str, set[str]]:
    """Every zcluster module the core reaches, with its direct imports."""
    return closure(modules_of("zcluster.core"))


def test_closure_sees_every_form_of_import() -> None:
    source = (
        "import zcluster.errors\n"
        "from zcluster import wire\n"
        "from zcluster.protocol import messages as msg\n"
        "from . import effects\n"
        "from .events import Tick\n"
        "from ..protocol.members import Member\n"
        "def later():\n"
        "    import time\n"
    )
    found = imported_modules("zcluster.core.node", source)
    assert {
        "zcluster.errors",
        "zcluster.wire",
        "zcluster.protocol",
        "zcluster.protocol.messages",
        "zcluster.core",
        "zcluster.core.effects",
        "zcluster.core.events",
        "zcluster.protocol.members",
        "time",
    } <= found
    # a name imported from a module is not a module
    assert "zcluster.protocol.messages.Data" not in imported_modules(
        "zcluster.core.x", "from zcluster.protocol.messages import Data\n"
    )


def test_core_and_what_it_imports_stay_pure() -> None:
    closure_ = core_closure()
    assert "zcluster.core.node" in closure_
    # the closure follows imports out of the core: to the protocol vocabulary
    assert "zcluster.protocol.messages" in closure_
    assert WIRE not in closure_, "the core must not import the wire codec"
    for module, imports in closure_.items():
        bad = {m for m in imports if m.split(".")[0] in FORBIDDEN}
        assert not bad, f"{module} imports {sorted(bad)}"
        assert not any(m.startswith("zcluster.runtime") for m in imports), module
        assert WIRE not in imports, f"{module} imports {WIRE}"


def test_protocol_is_a_leaf() -> None:
    modules = modules_of("zcluster.protocol")
    assert {"zcluster.protocol.messages", "zcluster.protocol.capabilities"} <= set(modules)
    closure_ = closure(modules)
    assert set(closure_) == set(modules)
    for module, imports in closure_.items():
        outside = {
            m
            for m in imports
            if (m == "zcluster" or m.startswith("zcluster."))
            and not (m == "zcluster.protocol" or m.startswith("zcluster.protocol."))
        }
        assert not outside, f"{module} imports {sorted(outside)}"
        bad = {m for m in imports if m.split(".")[0] in FORBIDDEN}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_wire_does_not_import_the_core() -> None:
    closure_ = closure([WIRE])
    assert "zcluster.protocol.messages" in closure_
    core = sorted(m for m in closure_ if m == "zcluster.core" or m.startswith("zcluster.core."))
    assert not core, f"{WIRE} reaches {core}"


def newly_loaded(*modules: str) -> set[str]:
    """What a fresh interpreter loads to import ``modules`` (the package ``__init__`` skipped)."""
    code = (
        "import sys, types\n"
        "before = set(sys.modules)\n"
        f"sys.path.insert(0, {str(PACKAGE.parent)!r})\n"
        "pkg = types.ModuleType('zcluster'); pkg.__path__ = [" + repr(str(PACKAGE)) + "]\n"
        "sys.modules['zcluster'] = pkg\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_runs_without_io_modules_loaded() -> None:
    """Importing the core alone (not the package's public surface) loads none of them,
    nor the wire codec."""
    loaded = newly_loaded(*modules_of("zcluster.core"))
    assert "zcluster.core.node" in loaded
    assert sorted(m for m in FORBIDDEN if m in loaded) == []
    assert WIRE not in loaded
    assert not any(m.startswith("zcluster.runtime") for m in loaded), sorted(loaded)


def test_protocol_loads_nothing_else_of_zcluster() -> None:
    loaded = newly_loaded(*modules_of("zcluster.protocol"))
    ours = {m for m in loaded if m.startswith("zcluster.")}
    assert ours == set(modules_of("zcluster.protocol"))
    assert sorted(m for m in FORBIDDEN if m in loaded) == []


def test_wire_loads_no_core_module() -> None:
    loaded = newly_loaded(WIRE)
    assert WIRE in loaded
    assert not any(m.startswith("zcluster.core") for m in loaded), sorted(loaded)
