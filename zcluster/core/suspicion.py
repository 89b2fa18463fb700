"""Suspicion of members that speak swim: how long a SUSPECT member has to refute.

Lifeguard's dynamic suspicion: the timeout starts at ``suspect_timeout_max_s``
and shrinks, logarithmically, with each other member known to suspect the
same record, down to ``suspect_timeout_s`` once ``suspect_confirmations_count``
confirmed it (fewer in a small cluster, where fewer members can). A node
counts from when it first held the record SUSPECT, and again from whenever it
hears the member itself: it never declares down a member it hears.
"""

from __future__ import annotations

import math

from zcluster.config import NodeConfig


class Suspicions:
    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        #: each SUSPECT member: when this node started counting its suspicion
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._since)

    def start(self, node_id: str, now: float) -> None:
        self._since.setdefault(node_id, now)

    def stop(self, node_id: str) -> None:
        self._since.pop(node_id, None)

    def heard(self, node_id: str, now: float) -> None:
        if node_id in self._since:
            self._since[node_id] = now

    def items(self) -> list[tuple[str, float]]:
        return list(self._since.items())

    def timeout_s(self, members: int, suspecters: int) -> float:
        """How long a suspicion lasts in a cluster of ``members``, known to ``suspecters``."""
        config = self._config
        low = config.suspect_timeout_s
        high = max(low, config.suspect_timeout_max_s)
        # Confirmations possible: every member but the suspect and the first suspecter.
        expected = min(config.suspect_confirmations_count, members - 2)
        if expected < 1:
            return low
        confirmations = max(0, suspecters - 1)
        fraction = math.log(confirmations + 1) / math.log(expected + 1)
        return max(low, high - (high - low) * fraction)
