"""What one side of one repetition measured, and the error for a measurement that failed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from zcluster import DeliveryGuarantee
from zcluster.bench.stats import percentile, rate_per_s
from zcluster.errors import ZclusterError


class BenchError(ZclusterError):
    """A measurement could not be made: a worker failed, died or missed its time limit."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One figure of one repetition.

    ``value`` is None when the thing measured did not happen within its bound
    (a cluster that did not converge); ``note`` then says what did happen.
    ``problems`` are broken promises: guaranteed messages lost, duplicated or
    out of order, acknowledgements that did not end DELIVERED.
    """

    value: float | None
    lost: int | None = None
    duplicates: int | None = None
    problems: tuple[str, ...] = ()
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def order_problems(guarantee: DeliveryGuarantee, duplicates: int, out_of_order: int) -> list[str]:
    """Duplicates break every guarantee but AT_LEAST_ONCE; reordering breaks ORDERED."""
    problems = []
    if duplicates and guarantee is not DeliveryGuarantee.AT_LEAST_ONCE:
        problems.append(f"{duplicates} duplicates")
    if out_of_order and guarantee is DeliveryGuarantee.ORDERED:
        problems.append(f"{out_of_order} out of order")
    return problems


def delivery_sample(start_s: float, results: list[dict[str, Any]], count: int) -> Sample:
    """Deliveries per second over every receiver, from the first send to the last arrival.

    ``results`` are the receivers' reports of ``count`` messages sent to each.
    """
    received = sum(r["received"] for r in results)
    last_s = max(r["last_arrival_s"] for r in results)
    per_receiver = sorted(rate_per_s(r["received"], start_s, r["last_arrival_s"]) for r in results)
    return Sample(
        rate_per_s(received, start_s, last_s),
        lost=count * len(results) - received,
        extra={
            "messages_count": count,
            "receivers_count": len(results),
            "per_receiver_msgs_s": [round(rate) for rate in per_receiver],
        },
    )


def best_burst(bursts: list[Sample]) -> Sample:
    """The fastest burst, with every burst's rate, and the losses, duplicates and problems
    of them all. The fastest, not the median: on a shared machine a burst only ever runs
    slower than the code allows (the advice of ``timeit``), and raw pyzmq's bursts fall in
    two modes some 40 % apart, between which a median flips from one run to the next."""
    best = max(bursts, key=lambda sample: sample.value or 0.0)
    return dataclasses.replace(
        best,
        lost=total_count(sample.lost for sample in bursts),
        duplicates=total_count(sample.duplicates for sample in bursts),
        problems=tuple(problem for sample in bursts for problem in sample.problems),
        extra={**best.extra, "bursts_msgs_s": [round(sample.value or 0.0) for sample in bursts]},
    )


def total_count(counts: Iterable[int | None]) -> int | None:
    """The sum of the counts that exist; None when none does."""
    present = [count for count in counts if count is not None]
    return sum(present) if present else None


def latency_samples(samples_ns: list[int]) -> dict[str, Sample]:
    """p50 and p99 of round-trip times, in microseconds."""
    ordered = sorted(samples_ns)
    extra = {"round_trips_count": len(ordered), "mean_us": sum(ordered) / len(ordered) / 1e3}
    return {
        "p50": Sample(percentile(ordered, 50) / 1e3, extra=extra),
        "p99": Sample(percentile(ordered, 99) / 1e3, extra=extra),
    }
