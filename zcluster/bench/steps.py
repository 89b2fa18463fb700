"""Steps the zcluster scenarios share: membership checks, warm-up, waiting for receivers,
counter deltas."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from multiprocessing.synchronize import Semaphore

from zcluster import AsyncNode, MemberStatus, Node
from zcluster.bench.processes import READY_TIMEOUT_S
from zcluster.bench.samples import BenchError

#: a warm-up round is sent again when not every receiver counted it within this
WARMUP_ROUND_S = 2.0


def acquire_all(semaphore: Semaphore, count: int, timeout_s: float) -> int:
    """Acquire ``count`` times within ``timeout_s`` in all; returns how many succeeded."""
    deadline = time.monotonic() + timeout_s
    acquired = 0
    while acquired < count and semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())):
        acquired += 1
    return acquired


def warm_up(send_round: Callable[[], None], warmed: Semaphore, receivers_count: int) -> None:
    """Send warm-up rounds until every receiver released ``warmed`` (bounded)."""
    ready, deadline = 0, time.monotonic() + READY_TIMEOUT_S
    while ready < receivers_count:
        if time.monotonic() > deadline:
            raise BenchError(f"warm-up reached {ready} of {receivers_count} receivers")
        send_round()
        ready += acquire_all(warmed, receivers_count - ready, WARMUP_ROUND_S)


def stats_delta(
    before: dict[str, int], after: dict[str, int], keys: Sequence[str]
) -> dict[str, int]:
    """How much the node counters ``keys`` grew."""
    return {key: after.get(key, 0) - before.get(key, 0) for key in keys}


def is_up(node: Node | AsyncNode, node_id: str) -> bool:
    """Whether ``node`` sees ``node_id`` UP."""
    member = node.member(node_id)
    return member is not None and member.status is MemberStatus.UP
