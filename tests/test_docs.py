"""The user documentation stays true to the code.

- docs/configuration.md has a reference-table row for every NodeConfig field,
  with the field's real default;
- every ```python block in docs/getting-started.md is a complete program
  that runs and exits 0;
- every ``zcluster <command>`` in docs/cli.md exists, and the options shown
  for ``zcluster node`` are the ones it has.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zcluster import NodeConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
GETTING_STARTED = DOCS / "getting-started.md"
CLI = DOCS / "cli.md"
BLOCK_TIMEOUT_S = 60
CLI_TIMEOUT_S = 30

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"(?<![\w.-])zcluster[ \t]+([a-z][a-z0-9-]*)")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*_(s|count|bytes)$")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def python_blocks(path: Path) -> list[str]:
    return [body for lang, body in fenced_blocks(path.read_text()) if lang == "python"]


def clean_env() -> dict[str, str]:
    """The environment without ZCLUSTER_* settings, so that documents run as written."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZCLUSTER_")}


def run_cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "zcluster", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---------------------------------------------------------------- configuration.md


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell (backticks stripped)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|") or set(stripped) <= set("|-: "):
            continue
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_config_field_has_a_table_row() -> None:
    rows = table_rows(CONFIGURATION.read_text())
    missing = [f.name for f in dataclasses.fields(NodeConfig) if f.name not in rows]
    assert not missing, f"docs/configuration.md has no table row for: {', '.join(missing)}"


def test_documented_defaults_match_the_code() -> None:
    rows = table_rows(CONFIGURATION.read_text())
    wrong = []
    for field in dataclasses.fields(NodeConfig):
        cells = rows.get(field.name)
        if cells is None:
            continue  # reported by test_every_config_field_has_a_table_row
        documented = (
            cells[1].strip("` ").replace(",", "").replace("_", "") if len(cells) > 1 else ""
        )
        if documented != str(field.default):
            wrong.append(f"{field.name}: documented {documented!r}, code {field.default!r}")
    assert not wrong, "\n".join(wrong)


def test_no_table_row_names_a_setting_that_does_not_exist() -> None:
    known = {f.name for f in dataclasses.fields(NodeConfig)}
    rows = table_rows(CONFIGURATION.read_text())
    unknown = [name for name in rows if _FIELD_NAME.match(name) and name not in known]
    assert not unknown, f"not NodeConfig fields: {', '.join(unknown)}"


# ---------------------------------------------------------------- getting-started.md

GETTING_STARTED_BLOCKS = python_blocks(GETTING_STARTED)


def test_getting_started_has_python_examples() -> None:
    assert len(GETTING_STARTED_BLOCKS) >= 5


def assert_block_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    """Run one Python block of a docs page as a script in a clean environment."""
    script = tmp_path / f"block_{index}.py"
    script.write_text(block)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert proc.returncode == 0, (
        f"python block {index} of docs/{page} exited {proc.returncode}\n"
        f"--- block ---\n{block}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


@pytest.mark.parametrize("index", range(len(GETTING_STARTED_BLOCKS)))
def test_getting_started_python_block_runs(index: int, tmp_path: Path) -> None:
    assert_block_runs("getting-started.md", index, GETTING_STARTED_BLOCKS[index], tmp_path)


# ---------------------------------------------------------------- delivery.md

DELIVERY = DOCS / "delivery.md"
DELIVERY_BLOCKS = python_blocks(DELIVERY)


def test_delivery_doc_has_python_examples() -> None:
    assert len(DELIVERY_BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(DELIVERY_BLOCKS)))
def test_delivery_python_block_runs(index: int, tmp_path: Path) -> None:
    assert_block_runs("delivery.md", index, DELIVERY_BLOCKS[index], tmp_path)


def test_delivery_doc_lists_every_delivery_counter() -> None:
    text = DELIVERY.read_text()
    sources = [p.read_text() for p in (ROOT / "zcluster" / "core").glob("*.py")]
    counted = set()
    for source in sources:
        counted |= set(re.findall(r'counters\["((?:reliable|publication)[a-z_]*)"\]', source))
        counted |= set(re.findall(r'_count\("((?:reliable|publication)[a-z_]*)"', source))
    missing = sorted(c for c in counted if f"`{c}`" not in text)
    assert not missing, f"docs/delivery.md does not list: {missing}"


# ---------------------------------------------------------------- cli.md


def code_text(markdown: str) -> str:
    """Inline code spans and non-Python fenced blocks: where commands are written."""
    parts = [body for lang, body in fenced_blocks(markdown) if lang != "python"]
    outside = _FENCE.sub("", markdown)
    parts.extend(_INLINE_CODE.findall(outside))
    return "\n".join(parts)


def help_commands(help_text: str) -> set[str]:
    """Command names listed under 'Commands:' in click's help output."""
    _, _, listing = help_text.partition("\nCommands:\n")
    return {m.group(1) for m in re.finditer(r"^  ([a-z][a-z0-9-]*)\s", listing, re.MULTILINE)}


def help_options(help_text: str) -> set[str]:
    _, _, listing = help_text.partition("\nOptions:\n")
    return set(_OPTION.findall(listing))


def section(markdown: str, title: str) -> str:
    """The text under the second-level heading containing ``title``."""
    match = re.search(
        rf"^## [^\n]*{re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL
    )
    assert match is not None, f"docs/cli.md has no '## ... {title}' section"
    return match.group(1)


def test_cli_doc_names_only_real_commands() -> None:
    documented = set(_COMMAND.findall(code_text(CLI.read_text())))
    assert {"node", "demo", "pub", "sub"} <= documented
    real = help_commands(run_cli("--help"))
    assert real, "could not read the command list of `zcluster --help`"
    unknown = documented - real
    assert not unknown, f"docs/cli.md names commands that do not exist: {sorted(unknown)}"


def test_every_command_is_documented() -> None:
    documented = set(_COMMAND.findall(code_text(CLI.read_text())))
    missing = help_commands(run_cli("--help")) - documented
    assert not missing, f"commands missing from docs/cli.md: {sorted(missing)}"


def test_node_options_in_cli_doc_exist() -> None:
    shown = set(_OPTION.findall(section(CLI.read_text(), "zcluster node")))
    assert {"--id", "--bind", "--seed"} <= shown
    real = help_options(run_cli("node", "--help"))
    unknown = shown - real
    assert not unknown, f"options shown for `zcluster node` that it does not have: {unknown}"


def test_every_node_option_is_documented() -> None:
    shown = set(_OPTION.findall(section(CLI.read_text(), "zcluster node")))
    missing = help_options(run_cli("node", "--help")) - shown
    assert not missing, f"`zcluster node` options missing from docs/cli.md: {sorted(missing)}"
