"""SWIM probing: whom to probe next, what each probe is waiting for, and local health.

Members that speak swim are probed one per ``probe_interval_s`` in rounds:
each round visits every such member once, in an order shuffled with the
node's seeded generator, and a member that appears mid-round is slotted at a
random place among those still to come. So every member is probed by each
node at least once every two rounds, and by someone about once per interval.

Local health (Lifeguard): a node that misses the NACKs it expects, fails a
probe nobody could confirm, or has to refute a suspicion of itself is more
likely slow than its peers dead; each such event raises its score, each
answered probe lowers it, and probe intervals and timeouts are stretched by
``1 + score`` (at most ``1 + local_health_max_count``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable


@dataclasses.dataclass(slots=True)
class Probe:
    """One probe of ``target``: direct first, through helpers after ``indirect_at``."""

    target: str
    started: float
    indirect_at: float
    deadline: float
    #: helpers asked that speak swim: each answers with an ACK or a NACK
    helpers: int = 0
    nacks: int = 0
    indirect_sent: bool = False


class RoundRobin:
    """The order in which members are probed."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[str] = []
        self._next = 0
        #: the members in what is left of this round (order[_next:])
        self._to_come: set[str] = set()

    def added(self, node_id: str) -> None:
        """A member to probe appeared: somewhere in what is left of this round (once: one
        that went and came back before its turn keeps its place)."""
        if node_id in self._to_come:
            return
        self._to_come.add(node_id)
        order = self._order
        order.append(node_id)
        swap = self._rng.randrange(self._next, len(order))
        order[swap], order[-1] = order[-1], order[swap]

    def next(self, members: list[str], wanted: Callable[[str], bool]) -> str | None:
        """The next member to probe; a new round of ``members`` when this one is done.
        Members no longer ``wanted`` are skipped."""
        for _ in range(2):
            order = self._order
            while self._next < len(order):
                node_id = order[self._next]
                self._next += 1
                self._to_come.discard(node_id)
                if wanted(node_id):
                    return node_id
            self._order = list(members)
            self._rng.shuffle(self._order)
            self._next = 0
            self._to_come = set(self._order)
        return None


class LocalHealth:
    def __init__(self, max_count: int) -> None:
        self._max = max_count
        self.score = 0

    def scale(self, seconds: float) -> float:
        return seconds * (1 + self.score)

    def worse(self, by: int = 1) -> None:
        self.score = min(self._max, self.score + by)

    def better(self) -> None:
        self.score = max(0, self.score - 1)
