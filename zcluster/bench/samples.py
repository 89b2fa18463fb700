"""What one side of one repetition measured, and the error for a measurement that failed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from zcluster import DeliveryGuarantee
from zcluster.bench.stats import percentile, rate_per_s
from zcluster.errors import ZclusterError

#: what a throughput sample's extra calls the CPU time per message of its burst (µs)
CPU_PER_MESSAGE = "cpu_us_per_message"
#: and of the burst that used the least, in a sample of several
LOWEST_CPU_PER_MESSAGE = "lowest_cpu_us_per_message"
#: the suffix of the key of a CPU sample (``cpu_samples``)
CPU = "cpu"


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


def delivery_sample(
    start_s: float, results: list[dict[str, Any]], count: int, sender_cpu_s: float | None = None
) -> Sample:
    """Deliveries per second over every receiver, from the first send to the last arrival.

    ``results`` are the receivers' reports of ``count`` messages sent to each; with the
    sender's CPU time and theirs (``cpu_s``), the CPU time per delivery as well.
    """
    received = sum(r["received"] for r in results)
    last_s = max(r["last_arrival_s"] for r in results)
    per_receiver = sorted(rate_per_s(r["received"], start_s, r["last_arrival_s"]) for r in results)
    extra: dict[str, Any] = {
        "messages_count": count,
        "receivers_count": len(results),
        "per_receiver_msgs_s": [round(rate) for rate in per_receiver],
    }
    if sender_cpu_s is not None:
        spent = [sender_cpu_s, *(r.get("cpu_s") for r in results)]
        extra[CPU_PER_MESSAGE] = cpu_per_message_us(spent, received)
    return Sample(
        rate_per_s(received, start_s, last_s), lost=count * len(results) - received, extra=extra
    )


def cpu_per_message_us(spent_s: Iterable[float | None], messages: int) -> float | None:
    """The CPU time of every process of a burst per message delivered, in microseconds;
    None when a process did not say, or nothing arrived."""
    times = list(spent_s)
    if messages <= 0 or any(t is None for t in times):
        return None
    return sum(t for t in times if t is not None) / messages * 1e6


def best_burst(bursts: list[Sample]) -> Sample:
    """The fastest burst, with every burst's rate, and the losses, duplicates and problems
    of them all. The fastest, not the median: on a shared machine a burst only ever runs
    slower than the code allows (the advice of ``timeit``), and raw pyzmq's bursts fall in
    two modes some 40 % apart, between which a median flips from one run to the next."""
    best = max(bursts, key=lambda sample: sample.value or 0.0)
    extra = {**best.extra, "bursts_msgs_s": [round(sample.value or 0.0) for sample in bursts]}
    cpu = [sample.extra.get(CPU_PER_MESSAGE) for sample in bursts]
    if any(value is not None for value in cpu):
        extra["bursts_" + CPU_PER_MESSAGE] = cpu
        extra[LOWEST_CPU_PER_MESSAGE] = min(value for value in cpu if value is not None)
    return dataclasses.replace(
        best,
        lost=total_count(sample.lost for sample in bursts),
        duplicates=total_count(sample.duplicates for sample in bursts),
        problems=tuple(problem for sample in bursts for problem in sample.problems),
        extra=extra,
    )


def cpu_samples(samples: dict[str, Sample]) -> dict[str, Sample]:
    """A sample of the lowest CPU time per message of each throughput sample that has one,
    as "KEY cpu" (the lowest, as the fastest burst: other work only ever adds to it)."""
    return {
        f"{key} {CPU}": Sample(
            sample.extra[LOWEST_CPU_PER_MESSAGE],
            extra={"bursts_" + CPU_PER_MESSAGE: sample.extra["bursts_" + CPU_PER_MESSAGE]},
        )
        for key, sample in samples.items()
        if LOWEST_CPU_PER_MESSAGE in sample.extra
    }


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
