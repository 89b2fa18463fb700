"""What a security mode costs: each scenario in a mode next to the same one in mode none.

A row of the ``security`` group names the row of its scenario in mode none (its
``reference``). Its cost is zcluster's figure divided by zcluster's in mode none,
and raw pyzmq's over CURVE divided by raw pyzmq's over plain TCP, each per
repetition (repetition k of a mode runs right after repetition k of none, in the
same run) and then the median with its range, as ``zc/raw`` is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from zcluster.bench.report import RowReport, aligned, number, spread_json
from zcluster.bench.stats import paired_ratios, spread

_COLUMNS = (
    "security cost",
    "unit",
    "zcluster",
    "zc none",
    "zc/none",
    "range",
    "raw pyzmq",
    "raw plain",
    "raw/plain",
    "range",
)
_RIGHT_ALIGNED = set(_COLUMNS[2:])
_LEGEND = (
    "zc/none: zcluster in the row's mode / zcluster in mode none; raw/plain: raw pyzmq\n"
    "over CURVE / over plain TCP (no raw side for a mode without Curve); each per\n"
    "repetition pair, median (range: min-max). Below 1.00x the mode is slower."
)


@dataclasses.dataclass(frozen=True)
class Cost:
    """A row in a security mode, and the row of the same scenario in mode none."""

    variant: RowReport
    reference: RowReport

    @property
    def zcluster_ratios(self) -> list[float]:
        return paired_ratios(self.variant.zcluster_values, self.reference.zcluster_values)

    @property
    def raw_ratios(self) -> list[float]:
        variant, reference = self.variant.raw_values, self.reference.raw_values
        if variant is None or reference is None:
            return []
        return paired_ratios(variant, reference)


def summarize(reports: Sequence[RowReport]) -> list[Cost]:
    """A cost for every row whose reference row was run too."""
    by_title = {r.row.title: r for r in reports}
    return [
        Cost(r, by_title[r.row.reference])
        for r in reports
        if r.row.reference is not None and r.row.reference in by_title
    ]


def _median(values: Sequence[float | None] | None, unit: str) -> str:
    middle = None if values is None else spread(values)
    return number(None if middle is None else middle.median, unit)


def _ratio(ratios: Sequence[float]) -> list[str]:
    middle = spread(ratios)
    if middle is None:
        return ["-", "-"]
    return [f"{middle.median:.2f}x", f"{middle.low:.2f}-{middle.high:.2f}"]


def _cells(cost: Cost) -> list[str]:
    variant, reference = cost.variant, cost.reference
    unit = variant.row.unit
    return [
        variant.row.title,
        unit,
        _median(variant.zcluster_values, unit),
        _median(reference.zcluster_values, unit),
        *_ratio(cost.zcluster_ratios),
        _median(variant.raw_values, unit),
        _median(reference.raw_values if variant.raw_values is not None else None, unit),
        *_ratio(cost.raw_ratios),
    ]


def text(costs: Sequence[Cost]) -> str:
    """The costs table with its legend ("" when there is none)."""
    if not costs:
        return ""
    return aligned(_COLUMNS, _RIGHT_ALIGNED, [_cells(c) for c in costs]) + "\n\n" + _LEGEND


def cost_json(cost: Cost) -> dict[str, Any]:
    zcluster, raw = cost.zcluster_ratios, cost.raw_ratios
    return {
        "scenario": cost.variant.row.title,
        "reference": cost.reference.row.title,
        "unit": cost.variant.row.unit,
        "zcluster_ratio": {"values": zcluster, **spread_json(spread(zcluster))},
        "raw_ratio": {"values": raw, **spread_json(spread(raw))} if raw else None,
    }
