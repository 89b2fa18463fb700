"""zcluster direct sends: ``Node.send`` in one process to a handler in another.

Each guarantee sends to its own handler, in turn, in the same two processes,
after a warm-up with that guarantee, in bursts; the next burst starts when
the receiver is done with the last. A guaranteed send is timed until every
acknowledgement is final (DELIVERED once the receiver's handler returned and
the sender heard so); an ``AT_MOST_ONCE`` one until the handler saw the last
message. The receiver counts what its handler got: losses, duplicates and
order are checked against the guarantee. In a security mode (the ``security``
group) the receiver is the seed, and the sender joins it with the mode's
configuration (``bench.modes``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Semaphore
from typing import Any

from zcluster import AckStatus, DeliveryGuarantee, MessageAcknowledgement, Node
from zcluster.bench import workload
from zcluster.bench.modes import NO_SECURITY, Secured
from zcluster.bench.processes import READY_TIMEOUT_S, RUN_TIMEOUT_S, Link, Workers, cpu_s
from zcluster.bench.samples import (
    CPU_PER_MESSAGE,
    BenchError,
    Sample,
    best_burst,
    cpu_per_message_us,
    order_problems,
)
from zcluster.bench.stats import rate_per_s
from zcluster.bench.steps import acquire_all, is_up, stats_delta, warm_up
from zcluster.bench.tally import IDLE_TIMEOUT_S, REPAIR_IDLE_TIMEOUT_S, Tally, burst_counts

RECEIVER_ID = "bench-rx"
SENDER_ID = "bench-tx"
SENDER_STATS = ("reliable_retransmits", "sends_dropped_queue_full", "reliable_expired")
RECEIVER_STATS = ("reliable_duplicates", "callback_errors")


def handler_of(guarantee: DeliveryGuarantee) -> str:
    return f"bench.{guarantee.value}"


def wait_all(acks: Sequence[MessageAcknowledgement], timeout_s: float) -> dict[str, int]:
    """Wait (bounded in all) until every acknowledgement is final; count them by status."""
    deadline = time.monotonic() + timeout_s
    for ack in acks:
        if not ack.wait(max(0.0, deadline - time.monotonic())).is_final:
            break
    statuses: dict[str, int] = {}
    for ack in acks:
        statuses[ack.status.name] = statuses.get(ack.status.name, 0) + 1
    return statuses


def _receiver(
    link: Link,
    guarantee_names: list[str],
    count: int,
    bursts: int,
    warmup: int,
    warmed: Semaphore,
    done: Semaphore,
    security: Secured,
) -> None:
    tallies = {name: Tally(count * bursts, warmup) for name in guarantee_names}
    node = Node(RECEIVER_ID, security=security.for_seed())
    for name, tally in tallies.items():
        node.register(handler_of(DeliveryGuarantee[name]), tally.on_direct)
    with node:
        link.report("ready", address=node.address)
        for name, tally in tallies.items():
            if not tally.warmed.wait(READY_TIMEOUT_S + RUN_TIMEOUT_S):
                raise BenchError(f"{name}: no warm-up arrived")
            reliable = DeliveryGuarantee[name].is_reliable
            idle_s = REPAIR_IDLE_TIMEOUT_S if reliable else IDLE_TIMEOUT_S
            stats, counts, cpu_before_s = node.stats(), tally.counts(), cpu_s()
            warmed.release()
            for burst in range(bursts):
                tally.wait_received((burst + 1) * count, idle_s, READY_TIMEOUT_S)
                stats_after, counts_after, cpu_after_s = node.stats(), tally.counts(), cpu_s()
                link.report(
                    "received",
                    stats=stats_delta(stats, stats_after, RECEIVER_STATS),
                    cpu_s=cpu_after_s - cpu_before_s,
                    **burst_counts(counts, counts_after),
                )
                stats, counts, cpu_before_s = stats_after, counts_after, cpu_after_s
                done.release()  # the next burst starts once the receiver is done


def _send(
    node: Node, handler: str, guarantee: DeliveryGuarantee, seqs: range, payload: bytes
) -> list[MessageAcknowledgement]:
    """Send the messages numbered ``seqs``; the acknowledgements of guaranteed ones."""
    acks = []
    send, make = node.send, workload.make_message
    for seq in seqs:
        ack = send(
            RECEIVER_ID, handler, make(seq, payload), guarantee=guarantee, timeout=RUN_TIMEOUT_S
        )
        if ack is not None:
            acks.append(ack)
    return acks


def _warm_round(
    node: Node, handler: str, guarantee: DeliveryGuarantee, warmup: int, payload: bytes
) -> None:
    wait_all(_send(node, handler, guarantee, range(-warmup, 0), payload), READY_TIMEOUT_S)


def _sender(
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
    payload = workload.body()
    with Node(SENDER_ID, seeds=[seed], security=security.for_joiner(seed)) as node:
        if not node.wait_for(functools.partial(is_up, node, RECEIVER_ID), READY_TIMEOUT_S):
            raise BenchError(f"{RECEIVER_ID} not up within {READY_TIMEOUT_S:g} s")
        for name in guarantee_names:
            guarantee = DeliveryGuarantee[name]
            handler = handler_of(guarantee)
            warm_round = functools.partial(_warm_round, node, handler, guarantee, warmup, payload)
            warm_up(warm_round, warmed, 1)
            for burst in range(bursts):
                before, cpu_before_s = node.stats(), cpu_s()
                start_s = time.perf_counter()
                seqs = range(burst * count, (burst + 1) * count)
                acks = _send(node, handler, guarantee, seqs, payload)
                end_s = time.perf_counter()
                statuses = wait_all(acks, RUN_TIMEOUT_S)
                acked_s = time.perf_counter()
                acquire_all(done, 1, RUN_TIMEOUT_S)
                link.report(
                    "sent",
                    start_s=start_s,
                    end_s=end_s,
                    acked_s=acked_s,
                    statuses=statuses,
                    cpu_s=cpu_s() - cpu_before_s,
                    stats=stats_delta(before, node.stats(), SENDER_STATS),
                )


def direct(
    guarantees: Sequence[DeliveryGuarantee],
    count: int,
    bursts: int,
    warmup: int,
    *,
    security: Secured = NO_SECURITY,
) -> dict[str, Sample]:
    """A sender process and a receiver process: a sample per guarantee, its fastest burst
    of ``bursts`` of ``count`` messages."""
    names = [g.name for g in guarantees]
    with Workers(f"zcluster direct{security.label}") as workers:
        warmed, done = workers.semaphore(), workers.semaphore()
        args = (names, count, bursts, warmup, warmed, done, security)
        workers.start(_receiver, "receiver", *args)
        seed = workers.expect("ready", READY_TIMEOUT_S, "receiver")["address"]
        workers.start(_sender, "sender", seed, *args)
        samples = {}
        timeout_s = READY_TIMEOUT_S + 2 * RUN_TIMEOUT_S
        for guarantee in guarantees:
            measured = []
            for _ in range(bursts):
                sent = workers.expect("sent", timeout_s, "sender")
                received = workers.expect("received", timeout_s, "receiver")
                measured.append(_sample(guarantee, sent, received, count))
            samples[guarantee.name] = best_burst(measured)
    return samples


def _sample(
    guarantee: DeliveryGuarantee, sent: dict[str, Any], received: dict[str, Any], count: int
) -> Sample:
    lost = count - received["received"]
    duplicates = received["duplicates"]
    problems = order_problems(guarantee, duplicates, received["out_of_order"])
    if guarantee.is_reliable:
        delivered = sent["statuses"].get(AckStatus.DELIVERED.name, 0)
        value = rate_per_s(delivered, sent["start_s"], sent["acked_s"])
        if delivered != count:
            problems.append(f"acknowledgements {sent['statuses']}")
        if lost:
            problems.append(f"{lost} never reached the handler")
    else:
        value = rate_per_s(received["received"], sent["start_s"], received["last_arrival_s"])
    return Sample(
        value,
        lost=lost,
        duplicates=duplicates,
        problems=tuple(problems),
        extra={
            "guarantee": guarantee.name,
            "messages_count": count,
            CPU_PER_MESSAGE: cpu_per_message_us(
                (sent["cpu_s"], received["cpu_s"]), received["received"]
            ),
            "out_of_order": received["out_of_order"],
            "send_calls_per_s": round(rate_per_s(count, sent["start_s"], sent["end_s"])),
            "acknowledgements": sent["statuses"],
            "sender_stats": sent["stats"],
            "receiver_stats": received["stats"],
        },
    )
