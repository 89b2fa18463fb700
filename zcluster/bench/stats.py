"""The arithmetic of a report: medians, percentiles, ratios paired by repetition, rates.

Pure functions, no I/O: ``tests/bench/test_bench_stats.py`` checks them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

BYTES_PER_MEGABYTE = 1_000_000


@dataclasses.dataclass(frozen=True)
class Spread:
    """The median of some values and their range."""

    median: float
    low: float
    high: float


def spread(values: Sequence[float | None]) -> Spread | None:
    """Median, min and max of the values that exist; None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present))


def paired_ratios(zcluster: Sequence[float | None], raw: Sequence[float | None]) -> list[float]:
    """zcluster / raw for every repetition in which both were measured.

    Repetition k of zcluster ran right after repetition k of the baseline, so
    machine noise hits each pair alike; the median of these ratios is steadier
    than the ratio of the medians.
    """
    return [z / r for z, r in zip(zcluster, raw, strict=True) if z is not None and r]


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of values sorted in ascending order."""
    if not sorted_values:
        raise ValueError("no values")
    rank = math.ceil(percent / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def rate_per_s(count: int, start_s: float, end_s: float) -> float:
    """Events per second from ``start_s`` to ``end_s`` (0 when no time passed)."""
    elapsed_s = end_s - start_s
    return count / elapsed_s if elapsed_s > 0 else 0.0


def megabytes_per_s(messages_per_s: float, message_bytes: int) -> float:
    return messages_per_s * message_bytes / BYTES_PER_MEGABYTE
