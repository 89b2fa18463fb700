"""zcluster pub/sub: ``Node.publish`` in one process to subscriber callbacks in others.

The publisher waits until every subscriber is confirmed
(``Node.subscribers(topic)``), warms up until every subscriber has counted
the warm-up messages, then publishes the measured messages in bursts, and
after each burst waits until every subscriber is done with it, so that the
tail is not cut off and gaps can still be repaired. Each guarantee has its
own topic and runs in turn in the same processes; a subscriber waits for a
burst until none of its messages came for a while (longer when gaps may
still be repaired).

In a security mode (the ``security`` group) the publisher is the seed, and the
subscribers join it with the mode's configuration (``bench.modes``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Semaphore
from typing import Any, NamedTuple

from zcluster import DeliveryGuarantee, Node, PublicationLoss
from zcluster.bench import workload
from zcluster.bench.modes import NO_SECURITY, Secured
from zcluster.bench.processes import READY_TIMEOUT_S, RUN_TIMEOUT_S, Link, Workers, cpu_s
from zcluster.bench.samples import (
    BenchError,
    Sample,
    best_burst,
    delivery_sample,
    order_problems,
)
from zcluster.bench.stats import rate_per_s
from zcluster.bench.steps import acquire_all, stats_delta, warm_up
from zcluster.bench.tally import IDLE_TIMEOUT_S, REPAIR_IDLE_TIMEOUT_S, Tally, burst_counts

PUBLISHER_ID = "bench-pub"
PUBLISHER_STATS = ("publications_resent", "callback_errors")
SUBSCRIBER_STATS = (
    "publications_lost",
    "publications_repaired",
    "publication_fetches",
    "publications_duplicate",
    "publications_holdback_full",
    "callback_errors",
)


def topic_of(guarantee: DeliveryGuarantee) -> str:
    return f"bench.{guarantee.value}"


def _publish(
    node: Node, topic: str, guarantee: DeliveryGuarantee, seqs: range, payload: bytes
) -> None:
    publish, make = node.publish, workload.make_message
    for seq in seqs:
        publish(topic, make(seq, payload), guarantee=guarantee, timeout=RUN_TIMEOUT_S)


def _publisher(
    link: Link,
    subscriber_ids: list[str],
    guarantee_names: list[str],
    count: int,
    bursts: int,
    warmup: int,
    body_bytes: int,
    warmed: Semaphore,
    done: Semaphore,
    security: Secured,
) -> None:
    payload = workload.body(body_bytes)
    with Node(PUBLISHER_ID, security=security.for_seed()) as node:
        link.report("ready", address=node.address)
        topics = [topic_of(DeliveryGuarantee[name]) for name in guarantee_names]

        def confirmed() -> bool:
            return all(set(subscriber_ids) <= node.subscribers(topic) for topic in topics)

        if not node.wait_for(confirmed, READY_TIMEOUT_S):
            raise BenchError(f"subscribers not confirmed within {READY_TIMEOUT_S:g} s")
        for name in guarantee_names:
            guarantee = DeliveryGuarantee[name]
            topic = topic_of(guarantee)
            warm_round = functools.partial(
                _publish, node, topic, guarantee, range(-warmup, 0), payload
            )
            warm_up(warm_round, warmed, len(subscriber_ids))
            for burst in range(bursts):
                before, cpu_before_s = node.stats(), cpu_s()
                start_s = time.perf_counter()
                _publish(node, topic, guarantee, range(burst * count, (burst + 1) * count), payload)
                end_s = time.perf_counter()
                acquire_all(done, len(subscriber_ids), RUN_TIMEOUT_S)  # keep the tail
                link.report(
                    "published",
                    start_s=start_s,
                    end_s=end_s,
                    cpu_s=cpu_s() - cpu_before_s,
                    stats=stats_delta(before, node.stats(), PUBLISHER_STATS),
                )


class _Progress(NamedTuple):
    """A subscriber's counters at one moment: a burst's figures are differences of two."""

    stats: dict[str, int]
    lost_reported: int
    counts: dict[str, Any]
    cpu_s: float


def _subscriber(
    link: Link,
    seed: str,
    guarantee_names: list[str],
    count: int,
    bursts: int,
    warmup: int,
    warmed: Semaphore,
    done: Semaphore,
    security: Secured,
) -> None:
    tallies = {
        topic_of(DeliveryGuarantee[name]): Tally(count * bursts, warmup) for name in guarantee_names
    }
    lost_reported = dict.fromkeys(tallies, 0)

    def on_loss(loss: PublicationLoss) -> None:
        lost_reported[loss.topic] += loss.count

    node = Node(link.role, seeds=[seed], security=security.for_joiner(seed))
    for topic, tally in tallies.items():
        node.subscribe(topic, tally.on_publication)
    node.on_publication_loss(on_loss)
    with node:
        for name in guarantee_names:
            guarantee = DeliveryGuarantee[name]
            topic = topic_of(guarantee)
            tally = tallies[topic]
            if not tally.warmed.wait(READY_TIMEOUT_S + RUN_TIMEOUT_S):
                raise BenchError(f"{name}: no warm-up arrived")
            idle_s = REPAIR_IDLE_TIMEOUT_S if guarantee.is_reliable else IDLE_TIMEOUT_S
            before = _Progress(node.stats(), lost_reported[topic], tally.counts(), cpu_s())
            warmed.release()
            for burst in range(bursts):
                tally.wait_received((burst + 1) * count, idle_s, READY_TIMEOUT_S)
                after = _Progress(node.stats(), lost_reported[topic], tally.counts(), cpu_s())
                link.report(
                    "received",
                    stats=stats_delta(before.stats, after.stats, SUBSCRIBER_STATS),
                    lost_reported=after.lost_reported - before.lost_reported,
                    cpu_s=after.cpu_s - before.cpu_s,
                    **burst_counts(before.counts, after.counts),
                )
                before = after
                done.release()  # the next burst starts once every subscriber is done


def pubsub(
    subscribers_count: int,
    guarantees: Sequence[DeliveryGuarantee],
    count: int,
    bursts: int,
    warmup: int,
    body_bytes: int,
    *,
    security: Secured = NO_SECURITY,
) -> dict[str, Sample]:
    """One publisher process, ``subscribers_count`` subscriber processes: a sample per
    guarantee, its fastest burst of ``bursts`` of ``count`` messages."""
    names = [g.name for g in guarantees]
    with Workers(f"zcluster pub/sub 1->{subscribers_count}{security.label}") as workers:
        warmed, done = workers.semaphore(), workers.semaphore()
        subscriber_ids = [f"bench-sub-{index}" for index in range(subscribers_count)]
        args = (names, count, bursts, warmup)
        workers.start(_publisher, "pub", subscriber_ids, *args, body_bytes, warmed, done, security)
        seed = workers.expect("ready", READY_TIMEOUT_S, "pub")["address"]
        for node_id in subscriber_ids:
            workers.start(_subscriber, node_id, seed, *args, warmed, done, security)
        samples = {}
        timeout_s = READY_TIMEOUT_S + RUN_TIMEOUT_S
        for guarantee in guarantees:
            measured = []
            for _ in range(bursts):
                sent = workers.expect("published", timeout_s, "pub")
                results = [workers.expect("received", timeout_s) for _ in subscriber_ids]
                measured.append(_sample(guarantee, sent, results, count))
            samples[guarantee.name] = best_burst(measured)
    return samples


def _sample(
    guarantee: DeliveryGuarantee, sent: dict[str, Any], results: list[dict[str, Any]], count: int
) -> Sample:
    sample = delivery_sample(sent["start_s"], results, count, sent["cpu_s"])
    duplicates = sum(r["duplicates"] for r in results)
    out_of_order = sum(r["out_of_order"] for r in results)
    lost_reported = sum(r["lost_reported"] for r in results)
    problems = order_problems(guarantee, duplicates, out_of_order)
    if guarantee.is_reliable and sample.lost:
        problems.append(f"{sample.lost} lost ({lost_reported} reported lost)")
    subscriber_stats: dict[str, int] = {}
    for result in results:
        for key, value in result["stats"].items():
            subscriber_stats[key] = subscriber_stats.get(key, 0) + value
    return dataclasses.replace(
        sample,
        duplicates=duplicates,
        problems=tuple(problems),
        extra={
            **sample.extra,
            "guarantee": guarantee.name,
            "out_of_order": out_of_order,
            "lost_reported": lost_reported,
            "publish_calls_per_s": round(rate_per_s(count, sent["start_s"], sent["end_s"])),
            "publisher_stats": sent["stats"],
            "subscriber_stats": subscriber_stats,
        },
    )
