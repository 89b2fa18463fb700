"""Throughput of each delivery guarantee next to raw pyzmq, measured in the same run.

    python benchmarks/bench_delivery.py [--count 20000] [--repeat 3] [--deadline 60]

Both ends run in this process (two nodes, each with its own loop thread; the
raw baselines use a receiver thread), so every scenario shares one GIL
alike. Each scenario is checked, not only timed: every message must reach
the handler or subscriber (exactly once where the guarantee says so, in
order for ORDERED) and every acknowledgement must end DELIVERED; otherwise
the run fails with exit status 1. Every wait is bounded by ``--deadline``.

- direct: ``Node.send`` to a handler on the other node. AT_MOST_ONCE is
  timed until the handler has seen every message; the guaranteed ones
  until every acknowledgement is final (it is DELIVERED once the receiver's
  handler returned). Baseline: raw DEALER -> ROUTER, msgpack per message.
- pub/sub: ``Node.publish`` to one subscriber node, timed until the
  subscriber has every message. Baseline: raw PUB -> SUB, msgpack per message.

Columns: the best rate of ``--repeat`` rounds, its ratio to the raw baseline
of the same kind, the caller's time per send/publish call (for guaranteed
sends this includes waiting for room when ``outbox_max_count`` messages are
unacknowledged), the callback invocations, and the delivery counters of
both nodes' ``stats()`` that were not zero (retransmissions, duplicates, ...).

The machines are shared and noisy: compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgpack
import zmq

from zcluster import AckStatus, DeliveryGuarantee, Node, ZclusterError
from zcluster.delivery import MessageAcknowledgement

G = DeliveryGuarantee
PAYLOAD: dict[str, Any] = {"sensor": "t-17", "celsius": 21.5}
DIRECT_HWM = 10_000  # zcluster's direct_hwm_count default
PUBSUB_HWM = 100_000  # zcluster's pubsub_hwm_count default
READY_TIMEOUT_S = 30.0
TOPIC = "bench"
STAT_KEYS = (
    "reliable_retransmits",
    "reliable_duplicates",
    "sends_dropped_queue_full",
    "publication_fetches",
    "publications_repaired",
    "publications_duplicate",
    "publications_lost",
)


class BenchmarkFailed(RuntimeError):
    """A scenario did not deliver what its guarantee promises, or ran past its deadline."""


def message(seq: int) -> dict[str, Any]:
    return {**PAYLOAD, "seq": seq}


@dataclass
class Result:
    rate: float
    elapsed_s: float
    received: int
    send_us: float
    stats: dict[str, int] = field(default_factory=dict)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


class Tally:
    """Counts what a handler or subscriber callback received (called from one thread)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seqs: list[int] = []
        self.distinct: set[int] = set()
        self.done = threading.Event()

    def add(self, seq: int) -> None:
        self.seqs.append(seq)
        self.distinct.add(seq)
        if len(self.distinct) >= self.expected:
            self.done.set()

    def check(
        self, what: str, *, exactly_once: bool, ordered: bool, allow_loss: bool = False
    ) -> None:
        missing = self.expected - len(self.distinct)
        duplicates = len(self.seqs) - len(self.distinct)
        problems = []
        if missing and not allow_loss:
            problems.append(f"{missing} of {self.expected} never arrived")
        if exactly_once and duplicates:
            problems.append(f"{duplicates} delivered more than once")
        if ordered and any(b <= a for a, b in zip(self.seqs, self.seqs[1:], strict=False)):
            problems.append("delivered out of order")
        if problems:
            raise BenchmarkFailed(f"{what}: " + "; ".join(problems))


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in STAT_KEYS}


def merged(*stats: dict[str, int]) -> dict[str, int]:
    return {k: sum(s.get(k, 0) for s in stats) for k in STAT_KEYS}


# ------------------------------------------------------------------ raw pyzmq baselines


def raw_direct(count: int, deadline_s: float) -> Result:
    """DEALER -> ROUTER, msgpack per message, ROUTER read and decoded in a thread."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, DIRECT_HWM)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, DIRECT_HWM)
    dealer.setsockopt(zmq.SNDTIMEO, int(deadline_s * 1000))
    dealer.connect(f"tcp://127.0.0.1:{port}")
    tally = Tally(count)
    deadline = Deadline(deadline_s)

    def receive() -> None:
        while not tally.done.is_set() and router.poll(int(deadline.left() * 1000)):
            _, body = router.recv_multipart()
            tally.add(msgpack.unpackb(body)["seq"])

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    try:
        start = time.perf_counter()
        for i in range(count):
            dealer.send(msgpack.packb(message(i)))
        sent = time.perf_counter() - start
        finished = tally.done.wait(deadline.left())
        elapsed = time.perf_counter() - start
        reader.join(deadline.left() + 1.0)
    finally:
        dealer.close(0)
        router.close(0)
        ctx.term()
    if not finished:
        raise BenchmarkFailed(f"raw DEALER->ROUTER: {len(tally.distinct)} of {count} arrived")
    tally.check("raw DEALER->ROUTER", exactly_once=True, ordered=True)
    return Result(count / elapsed, elapsed, len(tally.seqs), sent / count * 1e6)


def raw_pubsub(count: int, deadline_s: float) -> Result:
    """PUB -> SUB, msgpack per message, SUB read and decoded in a thread."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, PUBSUB_HWM)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, PUBSUB_HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    tally = Tally(count)
    ready = threading.Event()
    deadline = Deadline(deadline_s)

    def receive() -> None:
        while not tally.done.is_set() and sub.poll(int(deadline.left() * 1000)):
            topic, body = sub.recv_multipart()
            if topic == b"w":  # warm-up: the subscription has reached the publisher
                ready.set()
                continue
            tally.add(msgpack.unpackb(body)["seq"])

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    try:
        warm_until = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.01):
            if time.monotonic() > warm_until:
                raise BenchmarkFailed("raw SUB never connected")
            pub.send_multipart([b"w", b""])
        start = time.perf_counter()
        for i in range(count):
            pub.send_multipart([b"d", msgpack.packb(message(i))])
        sent = time.perf_counter() - start
        finished = tally.done.wait(deadline.left())
        elapsed = time.perf_counter() - start
        reader.join(deadline.left() + 1.0)
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()
    if not finished:
        raise BenchmarkFailed(f"raw PUB->SUB: {len(tally.distinct)} of {count} arrived")
    tally.check("raw PUB->SUB", exactly_once=True, ordered=True)
    return Result(count / elapsed, elapsed, len(tally.seqs), sent / count * 1e6)


# ------------------------------------------------------------------ zcluster


def zc_direct(count: int, guarantee: DeliveryGuarantee, deadline_s: float) -> Result:
    """Node.send from one node to a handler on another, both in this process."""
    tally = Tally(count)
    with Node("bench-tx") as tx, Node("bench-rx", seeds=[tx.address]) as rx:
        rx.register("bench", lambda msg, sender: tally.add(msg["seq"]))
        if not tx.wait_for(lambda: _is_live(tx, "bench-rx"), READY_TIMEOUT_S):
            raise BenchmarkFailed("the receiver never became a live member of the sender")
        gc.collect()
        before_tx, before_rx = tx.stats(), rx.stats()
        deadline = Deadline(deadline_s)
        acks: list[MessageAcknowledgement] = []
        start = time.perf_counter()
        for i in range(count):
            ack = tx.send(
                "bench-rx", "bench", message(i), guarantee=guarantee, timeout=deadline.left()
            )
            if ack is not None:
                acks.append(ack)
            if deadline.left() <= 0:
                raise BenchmarkFailed(f"{guarantee.name}: sending ran past the deadline")
        sent = time.perf_counter() - start
        if guarantee.is_reliable:
            for ack in acks:
                if not ack.wait(deadline.left()).is_final:
                    break
        else:
            tally.done.wait(deadline.left())
        elapsed = time.perf_counter() - start
        arrived = len(tally.distinct)
        # Every ack DELIVERED means every handler returned: no further wait is needed.
        tally.done.wait(min(1.0, deadline.left()))
        stats = merged(stats_delta(before_tx, tx.stats()), stats_delta(before_rx, rx.stats()))
    what = f"direct {guarantee.name}"
    statuses: dict[AckStatus, int] = {}
    for ack in acks:
        statuses[ack.status] = statuses.get(ack.status, 0) + 1
    if guarantee.is_reliable and statuses.get(AckStatus.DELIVERED, 0) != count:
        reasons = {ack.reason for ack in acks if ack.status is not AckStatus.DELIVERED}
        shown = {s.name: n for s, n in statuses.items()}
        raise BenchmarkFailed(f"{what}: acks {shown} (reasons: {sorted(reasons)[:3]})")
    if not guarantee.is_reliable and arrived < count:
        raise BenchmarkFailed(late(what, arrived, count, deadline_s, stats))
    tally.check(
        what,
        exactly_once=guarantee in (G.AT_MOST_ONCE, G.EXACTLY_ONCE),
        ordered=guarantee is G.ORDERED,
    )
    return Result(count / elapsed, elapsed, len(tally.seqs), sent / count * 1e6, stats)


def zc_pubsub(count: int, guarantee: DeliveryGuarantee, deadline_s: float) -> Result:
    """Node.publish to one subscriber node, both in this process."""
    tally = Tally(count)
    with Node("bench-pub") as pub, Node("bench-sub", seeds=[pub.address]) as sub:
        sub.subscribe(TOPIC, lambda topic, msg, sender: tally.add(msg["seq"]))
        if not pub.wait_for(lambda: "bench-sub" in pub.subscribers(TOPIC), READY_TIMEOUT_S):
            raise BenchmarkFailed("the subscriber never confirmed its subscription")
        gc.collect()
        before_pub, before_sub = pub.stats(), sub.stats()
        deadline = Deadline(deadline_s)
        start = time.perf_counter()
        for i in range(count):
            pub.publish(TOPIC, message(i), guarantee=guarantee, timeout=deadline.left())
            if deadline.left() <= 0:
                raise BenchmarkFailed(f"{guarantee.name}: publishing ran past the deadline")
        sent = time.perf_counter() - start
        tally.done.wait(deadline.left())
        elapsed = time.perf_counter() - start
        arrived = len(tally.distinct)
        stats = merged(stats_delta(before_pub, pub.stats()), stats_delta(before_sub, sub.stats()))
    what = f"pub/sub {guarantee.name}"
    if arrived < count:
        raise BenchmarkFailed(late(what, arrived, count, deadline_s, stats))
    tally.check(
        what,
        exactly_once=guarantee is not G.AT_LEAST_ONCE,
        ordered=guarantee is G.ORDERED,
    )
    return Result(count / elapsed, elapsed, len(tally.seqs), sent / count * 1e6, stats)


def late(what: str, arrived: int, count: int, deadline_s: float, stats: dict[str, int]) -> str:
    shown = {k: v for k, v in stats.items() if v}
    return f"{what}: {arrived} of {count} arrived within the {deadline_s:g}s deadline; {shown}"


def _is_live(node: Node, node_id: str) -> bool:
    member = node.member(node_id)
    return member is not None and member.status.is_live


# ------------------------------------------------------------------ report


def main() -> int:
    parser = argparse.ArgumentParser(description="delivery guarantees vs raw pyzmq, same run")
    parser.add_argument("--count", type=int, default=20_000, help="messages per scenario")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best rate counts")
    parser.add_argument(
        "--deadline", type=float, default=60.0, help="seconds one scenario may take at most"
    )
    args = parser.parse_args()
    n, deadline = args.count, args.deadline

    scenarios: list[tuple[str, str, Callable[[], Result]]] = [
        ("direct", "raw pyzmq DEALER->ROUTER + msgpack", lambda: raw_direct(n, deadline)),
    ]
    for g in (G.AT_MOST_ONCE, G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED):
        scenarios.append(("direct", f"Node.send {g.name}", partial(zc_direct, n, g, deadline)))
    scenarios.append(("pubsub", "raw pyzmq PUB->SUB + msgpack", lambda: raw_pubsub(n, deadline)))
    for g in (G.AT_MOST_ONCE, G.AT_LEAST_ONCE, G.ORDERED):
        scenarios.append(("pubsub", f"Node.publish {g.name}", partial(zc_pubsub, n, g, deadline)))

    best: dict[str, Result] = {}
    failures: list[str] = []
    started = time.perf_counter()
    for _ in range(args.repeat):
        # Rounds interleave the scenarios, so that machine noise hits all of them alike.
        for _, name, run in scenarios:
            try:
                result = run()
            except (BenchmarkFailed, ZclusterError, TimeoutError) as exc:
                failures.append(f"{name}: {exc}")
                print(f"FAILED {name}: {exc}", file=sys.stderr, flush=True)
                continue
            if name not in best or result.rate > best[name].rate:
                best[name] = result

    print(
        f"{n} messages of a small dict per scenario, two ends in one process, "
        f"best of {args.repeat}; Python {sys.version.split()[0]}, pyzmq {zmq.__version__}, "
        f"libzmq {zmq.zmq_version()}"
    )
    for group, title, baseline in (
        ("direct", "direct send -> handler", "raw pyzmq DEALER->ROUTER + msgpack"),
        ("pubsub", "pub/sub -> one subscriber node", "raw pyzmq PUB->SUB + msgpack"),
    ):
        print(f"{title}:")
        print(
            f"  {'scenario':36s} {'msg/s':>9s} {'vs raw':>7s} {'us/call':>8s} "
            f"{'received':>9s}  notes"
        )
        base = best.get(baseline)
        for kind, name, _ in scenarios:
            if kind != group:
                continue
            got = best.get(name)
            if got is None:
                print(f"  {name:36s} {'FAILED':>9s}")
                continue
            ratio = f"{got.rate / base.rate:6.2f}x" if base is not None else "     ?"
            notes = ", ".join(f"{k} {v}" for k, v in got.stats.items() if v)
            print(
                f"  {name:36s} {got.rate:>9,.0f} {ratio:>7s} {got.send_us:>8.1f} "
                f"{got.received:>9,d}  {notes}".rstrip()
            )
    print(f"total {time.perf_counter() - started:.1f} s")
    if failures:
        print(f"{len(failures)} scenario run(s) FAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
