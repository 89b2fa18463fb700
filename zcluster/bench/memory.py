"""Memory: an idle node, each peer it knows, each guaranteed message it holds unacknowledged.

- Idle: the resident memory (RSS) of a process running one started ``Node``
  alone, next to a raw process that imports pyzmq and msgpack and binds a
  ROUTER and a PUB. Both are plain ``python -c`` programs, so neither carries
  the benchmark's own machinery; the parent reads their RSS from ``/proc``.
- Per peer: a probe node's RSS with one peer, then with ``1 + peers`` (all
  hosted by one helper process); the difference divided by ``peers``, so
  that what the first peer sets up once is not counted.
- Per pending message: the probe sends ``pending`` ``AT_LEAST_ONCE`` messages
  to a peer whose handler is blocked, so that none is acknowledged. Counted
  with ``tracemalloc`` in the probe: the Python memory those messages keep
  alive, per message, minus the encoded message itself. tracemalloc sees
  every Python object the node keeps (the acknowledgement, the outbox
  entry, the encoded payload) and none of the allocator's slack or of
  tracemalloc's own bookkeeping, which RSS would mix in; so the figure is
  exact and steady from run to run. Memory outside Python (libzmq's queues)
  is not in it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import select
import subprocess
import sys
import time
import tracemalloc
from multiprocessing.synchronize import Event
from typing import Any

from zcluster import AckStatus, DeliveryGuarantee, MemberStatus, MessageAcknowledgement, Node
from zcluster.bench import workload
from zcluster.bench.direct import wait_all
from zcluster.bench.processes import (
    EXIT_TIMEOUT_S,
    READY_TIMEOUT_S,
    RUN_TIMEOUT_S,
    Link,
    Workers,
    rss_bytes,
)
from zcluster.bench.samples import BenchError, Sample

#: a process measured idle has run this long since it started its node (or bound its sockets)
SETTLE_S = 0.5
PROBE_ID = "bench-probe"
#: the peer whose handler holds every message, and that handler
HOLD_RECEIVER_ID = "bench-peer-0"
HOLD_HANDLER = "hold"
_MEGABYTE = 1_000_000
_KILOBYTE = 1_000

_RAW_IDLE = f"""
import sys, time, msgpack, zmq
ctx = zmq.Context()
router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
router.bind_to_random_port("tcp://127.0.0.1")
pub.bind_to_random_port("tcp://127.0.0.1")
msgpack.unpackb(msgpack.packb({{"id": 0}}))
time.sleep({SETTLE_S})
print("ready", flush=True)
sys.stdin.read()
router.close(0)
pub.close(0)
ctx.term()
"""

_ZCLUSTER_IDLE = f"""
import sys, time
from zcluster import Node
with Node("bench-idle"):
    time.sleep({SETTLE_S})
    print("ready", flush=True)
    sys.stdin.read()
"""


def _idle_rss_bytes(program: str) -> int:
    """RSS of ``python -c program`` once it printed a line; then it is told to end."""
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        readable, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
        if not readable or not process.stdout.readline():
            raise BenchError(f"an idle process did not get ready within {READY_TIMEOUT_S:g} s")
        return rss_bytes(process.pid)
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(EXIT_TIMEOUT_S)


def raw_idle() -> dict[str, Sample]:
    return {"idle": Sample(_idle_rss_bytes(_RAW_IDLE) / _MEGABYTE)}


def _live_peers(node: Node) -> int:
    return sum(1 for m in node.members() if m.status is MemberStatus.UP) - 1


def _has_peers(node: Node, count: int) -> bool:
    return _live_peers(node) >= count


def _probe(link: Link, peers_count: int, pending: int, proceed: Event, release: Event) -> None:
    with Node(PROBE_ID) as node:
        link.report("ready", address=node.address)
        for expected in (1, 1 + peers_count):  # one peer, then all of them
            if not link.wait(functools.partial(_has_peers, node, expected), READY_TIMEOUT_S):
                raise BenchError(f"{_live_peers(node)} of {expected} peers came up")
            link.report("peers", up=expected)
            if not link.wait(proceed.is_set, READY_TIMEOUT_S):
                return
            proceed.clear()
        acks = _hold_pending(link, node, pending)
        if link.wait(release.is_set, RUN_TIMEOUT_S):
            link.report("released", statuses=wait_all(acks, RUN_TIMEOUT_S))


def _hold_pending(link: Link, node: Node, pending: int) -> list[MessageAcknowledgement]:
    """Send ``pending`` messages that stay unacknowledged; report the memory they hold."""
    payload = workload.body()
    acks: list[MessageAcknowledgement | None] = [None] * pending  # no growth while traced
    message_bytes = len(node.serializer.serialize(workload.make_message(0, payload)))
    send, make, guarantee = node.send, workload.make_message, DeliveryGuarantee.AT_LEAST_ONCE
    sent_before = node.stats().get("reliable_sent", 0)

    def all_taken() -> bool:
        return node.stats().get("reliable_sent", 0) - sent_before >= pending

    gc.collect()
    tracemalloc.start()
    try:
        before_bytes = tracemalloc.get_traced_memory()[0]
        for seq in range(pending):
            acks[seq] = send(
                HOLD_RECEIVER_ID,
                HOLD_HANDLER,
                make(seq, payload),
                guarantee=guarantee,
                timeout=RUN_TIMEOUT_S,
            )
        if not link.wait(all_taken, READY_TIMEOUT_S):
            raise BenchError("the node did not take every message")
        time.sleep(SETTLE_S)
        gc.collect()
        held_bytes = tracemalloc.get_traced_memory()[0] - before_bytes
    finally:
        tracemalloc.stop()
    link.report("pending", held_bytes=held_bytes, message_bytes=message_bytes)
    return [ack for ack in acks if ack is not None]


def _peers(link: Link, seed: str, first_index: int, count: int, release: Event) -> None:
    """``count`` nodes in this one process; the ``hold`` handler of HOLD_RECEIVER_ID blocks."""
    nodes = [Node(f"bench-peer-{first_index + i}", seeds=[seed]) for i in range(count)]
    for node in nodes:
        if node.node_id == HOLD_RECEIVER_ID:
            node.register(HOLD_HANDLER, lambda _message, _sender: release.wait(RUN_TIMEOUT_S))
    try:
        for node in nodes:
            node.start()
        link.wait_over(RUN_TIMEOUT_S)
    finally:
        for node in nodes:
            node.stop()


def zcluster_memory(peers_count: int, pending_count: int) -> dict[str, Sample]:
    """Idle RSS, RSS per peer and memory per pending guaranteed message."""
    idle = Sample(_idle_rss_bytes(_ZCLUSTER_IDLE) / _MEGABYTE)
    with Workers("zcluster memory") as workers:
        proceed, release = workers.event(), workers.event()
        probe = workers.start(_probe, "probe", peers_count, pending_count, proceed, release)
        seed = workers.expect("ready", READY_TIMEOUT_S, "probe")["address"]
        rss_by_peers: dict[int, int] = {}
        for first, count in ((0, 1), (1, peers_count)):
            workers.start(_peers, f"peers-{first}", seed, first, count, release)
            up = workers.expect("peers", READY_TIMEOUT_S, "probe")["up"]
            time.sleep(SETTLE_S)
            rss_by_peers[up] = rss_bytes(probe.pid or 0)
            proceed.set()
        held = workers.expect("pending", READY_TIMEOUT_S + RUN_TIMEOUT_S, "probe")
        release.set()
        statuses = workers.expect("released", RUN_TIMEOUT_S, "probe")["statuses"]
    return {
        "idle": idle,
        "per_peer": _per_peer(rss_by_peers),
        "per_pending": _per_pending(held, pending_count, statuses),
    }


def _per_peer(rss_by_peers: dict[int, int]) -> Sample:
    """KB of RSS per peer, from the growth between the fewest and the most peers."""
    (few, few_bytes), (many, many_bytes) = sorted(rss_by_peers.items())
    return Sample(
        (many_bytes - few_bytes) / (many - few) / _KILOBYTE,
        extra={"peers_count": many, "rss_mb": {n: b / _MEGABYTE for n, b in rss_by_peers.items()}},
    )


def _per_pending(held: dict[str, Any], pending: int, statuses: dict[str, int]) -> Sample:
    """Bytes per unacknowledged message beyond the encoded message itself."""
    delivered = statuses.get(AckStatus.DELIVERED.name, 0)
    problems = () if delivered == pending else (f"acknowledgements {statuses}",)
    return Sample(
        held["held_bytes"] / pending - held["message_bytes"],
        lost=pending - delivered,
        problems=problems,
        extra={
            "pending_count": pending,
            "guarantee": DeliveryGuarantee.AT_LEAST_ONCE.name,
            "message_bytes": held["message_bytes"],
            "held_bytes_per_message": held["held_bytes"] / pending,
        },
    )
