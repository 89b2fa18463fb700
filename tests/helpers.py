"""Shared test helpers: waiting on conditions with a deadline, free ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from zcluster import MemberStatus

POLL_INTERVAL_S = 0.02


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = POLL_INTERVAL_S
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns the outcome."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def all_up(nodes: Sequence[Any]) -> bool:
    """Each node (Node or AsyncNode) sees exactly these nodes, all up, with equal digests."""
    ids = {n.node_id for n in nodes}
    for node in nodes:
        view = {m.node_id: m.status for m in node.members()}
        if set(view) != ids or any(s is not MemberStatus.UP for s in view.values()):
            return False
    return len({n.view_digest() for n in nodes}) == 1
