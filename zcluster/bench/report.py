"""The report: one row per scenario with medians and paired ratios, as a table and as JSON."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq

import zcluster
from zcluster.bench.runner import FamilyRun, Outcome
from zcluster.bench.samples import Sample, total_count
from zcluster.bench.scenarios import Row
from zcluster.bench.stats import Spread, paired_ratios, spread

GIT_TIMEOUT_S = 5.0
_COLUMNS = ("scenario", "unit", "zcluster", "raw pyzmq", "zc/raw", "range", "lost", "dup", "notes")
_RIGHT_ALIGNED = {"zcluster", "raw pyzmq", "zc/raw", "range", "lost", "dup"}


@dataclasses.dataclass(frozen=True)
class RowReport:
    """One row over every repetition: the samples of both sides and their paired ratios."""

    group: str
    family: str
    row: Row
    zcluster: list[Sample | None]
    raw: list[Sample | None] | None
    errors: list[str]

    @property
    def zcluster_values(self) -> list[float | None]:
        return [None if s is None else s.value for s in self.zcluster]

    @property
    def raw_values(self) -> list[float | None] | None:
        return None if self.raw is None else [None if s is None else s.value for s in self.raw]

    @property
    def ratios(self) -> list[float]:
        raw = self.raw_values
        return [] if raw is None else paired_ratios(self.zcluster_values, raw)

    @property
    def lost(self) -> int | None:
        return total_count(s.lost for s in self.zcluster if s is not None)

    @property
    def duplicates(self) -> int | None:
        return total_count(s.duplicates for s in self.zcluster if s is not None)

    @property
    def problems(self) -> list[str]:
        return [p for s in self.zcluster if s is not None for p in s.problems]

    @property
    def notes(self) -> list[str]:
        return [s.note for s in self.zcluster if s is not None and s.note]


def _samples(outcomes: list[Outcome], key: str) -> list[Sample | None]:
    return [None if o is None else o.get(key) for o in outcomes]


def summarize(runs: Sequence[FamilyRun]) -> list[RowReport]:
    return [
        RowReport(
            run.family.group,
            run.family.name,
            row,
            _samples(run.zcluster, row.key),
            None if row.raw_key is None else _samples(run.raw, row.raw_key),
            run.errors,
        )
        for run in runs
        for row in run.family.rows
    ]


def failed(reports: Sequence[RowReport]) -> bool:
    """A broken promise, or a measurement that could not be made."""
    return any(r.problems or r.errors for r in reports)


# ---------------------------------------------------------------- table


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("MB/s", "MB"):
        return f"{value:,.1f}"
    if unit == "s":
        return f"{value:.2f}"
    if unit == "us" and value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _median(values: Sequence[float | None] | None) -> Spread | None:
    return None if values is None else spread(values)


def _cells(report: RowReport) -> list[str]:
    unit = report.row.unit
    zc, raw, ratio = (
        _median(report.zcluster_values),
        _median(report.raw_values),
        spread(report.ratios),
    )
    notes = [*report.problems, *report.notes]
    if report.errors:
        notes.append(f"{len(report.errors)} session(s) FAILED")
    return [
        report.row.title,
        unit,
        number(None if zc is None else zc.median, unit),
        number(None if raw is None else raw.median, unit),
        "-" if ratio is None else f"{ratio.median:.2f}x",
        "-" if ratio is None else f"{ratio.low:.2f}-{ratio.high:.2f}",
        "-" if report.lost is None else str(report.lost),
        "-" if report.duplicates is None else str(report.duplicates),
        "; ".join(dict.fromkeys(notes)),
    ]


def table(reports: Sequence[RowReport]) -> str:
    """The rows as aligned text columns."""
    return aligned(_COLUMNS, _RIGHT_ALIGNED, [_cells(r) for r in reports])


def aligned(columns: Sequence[str], right: Collection[str], rows: list[list[str]]) -> str:
    """A header and rows as text columns; those named in ``right`` aligned right."""
    lines = [list(columns), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if name in right else cell.ljust(width)
            for name, cell, width in zip(columns, cells, widths, strict=True)
        ).rstrip()

    return "\n".join(line(cells) for cells in lines)


# ---------------------------------------------------------------- JSON


def machine() -> dict[str, Any]:
    """What the figures were measured on and with."""
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(str(part) for part in msgpack.version),
        "zcluster": zcluster.__version__,
        "git_revision": git_revision(),
    }


def git_revision() -> str | None:
    """The commit of the zcluster source in use (``-dirty`` when modified), if it is a checkout."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(zcluster.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _side_json(samples: list[Sample | None]) -> dict[str, Any]:
    values = [None if s is None else s.value for s in samples]
    return {
        "values": values,
        **spread_json(spread(values)),
        "samples": [None if s is None else s.to_json() for s in samples],
    }


def spread_json(middle: Spread | None) -> dict[str, float | None]:
    if middle is None:
        return {"median": None, "min": None, "max": None}
    return {"median": middle.median, "min": middle.low, "max": middle.high}


def row_json(report: RowReport) -> dict[str, Any]:
    ratios = report.ratios
    return {
        "group": report.group,
        "family": report.family,
        "scenario": report.row.title,
        "key": report.row.key,
        "unit": report.row.unit,
        "lower_is_better": report.row.lower_is_better,
        "zcluster": _side_json(report.zcluster),
        "raw": None if report.raw is None else _side_json(report.raw),
        "ratio": {"values": ratios, **spread_json(spread(ratios))} if ratios else None,
        "lost": report.lost,
        "duplicates": report.duplicates,
        "problems": report.problems,
        "notes": report.notes,
        "errors": report.errors,
    }


def text(reports: Sequence[RowReport], heading: str, sections: Sequence[str] = ()) -> str:
    """The table with its heading, a legend, further ``sections`` (the costs table),
    and every problem and error in full."""
    lines = [heading, "", table(reports), "", _LEGEND]
    for section in sections:
        lines += ["", section]
    problems = [f"  {r.row.title}: {p}" for r in reports for p in r.problems]
    if problems:
        lines += ["", "BROKEN PROMISES (guaranteed messages lost, duplicated or out of order):"]
        lines += problems
    errors = list(dict.fromkeys(f"  {r.family}, {e}" for r in reports for e in r.errors))
    if errors:
        lines += ["", "FAILED SESSIONS:", *errors]
    return "\n".join(lines)


_LEGEND = (
    "zc/raw: zcluster / raw pyzmq, per repetition pair, median (range: min-max).\n"
    "msg/s, MB/s: higher is better; us, s, MB, KB, B: lower is better.\n"
    "raw pyzmq: one frame per message, msgpack packb on send and unpackb on receive."
)
