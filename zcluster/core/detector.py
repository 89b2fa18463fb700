"""Failure detection of members that heartbeat (those that do not speak swim): by silence.

Such a member heartbeats on its PUB, so this node watches it directly. Silent
for ``heartbeat_timeout_s``, it is probed: a direct PING plus PING_REQs
through a few other members (indirect probes get around a single bad link).
No answer within ``probe_timeout_s`` makes it SUSPECT; the suspicion is
gossiped so the member can refute it. A suspect still silent after
``suspect_timeout_s`` is declared DOWN. A LEAVING member that falls silent
has LEFT. This node never declares down a member it hears.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from zcluster.config import NodeConfig
from zcluster.protocol.members import Member, MemberStatus


class Verdict(enum.Enum):
    PROBE = "probe"
    SUSPECT = "suspect"
    DOWN = "down"
    LEFT = "left"


@dataclasses.dataclass(slots=True)
class _Watch:
    last_heard: float
    probe_deadline: float | None = None
    suspect_deadline: float | None = None


class FailureDetector:
    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._watches: dict[str, _Watch] = {}

    def watch(self, node_id: str, now: float) -> None:
        """Start (or restart, for a new incarnation) watching a member; silence counts from now."""
        self._watches[node_id] = _Watch(last_heard=now)

    def forget(self, node_id: str) -> None:
        self._watches.pop(node_id, None)

    def heard(self, node_id: str, now: float) -> None:
        watch = self._watches.get(node_id)
        if watch is not None:
            watch.last_heard = now
            watch.probe_deadline = None
            watch.suspect_deadline = None  # fresh silence must run its full course again

    def refuted(self, node_id: str) -> None:
        watch = self._watches.get(node_id)
        if watch is not None:
            watch.suspect_deadline = None

    def probing(self, node_id: str, now: float) -> None:
        watch = self._watches.get(node_id)
        if watch is not None:
            watch.probe_deadline = now + self._config.probe_timeout_s

    def last_heard(self, node_id: str) -> float | None:
        watch = self._watches.get(node_id)
        return None if watch is None else watch.last_heard

    def step(self, live_peers: Iterable[Member], now: float) -> list[tuple[Verdict, str]]:
        """What to do about each live peer at time ``now``."""
        config = self._config
        verdicts: list[tuple[Verdict, str]] = []
        for member in live_peers:
            watch = self._watches.get(member.node_id)
            if watch is None:
                watch = self._watches[member.node_id] = _Watch(last_heard=now)
            if now - watch.last_heard <= config.heartbeat_timeout_s:
                continue
            if member.status is MemberStatus.LEAVING:
                verdicts.append((Verdict.LEFT, member.node_id))
            elif member.status is MemberStatus.SUSPECT:
                if watch.suspect_deadline is None:
                    watch.suspect_deadline = now + config.suspect_timeout_s
                elif now >= watch.suspect_deadline:
                    verdicts.append((Verdict.DOWN, member.node_id))
            elif watch.probe_deadline is None:
                verdicts.append((Verdict.PROBE, member.node_id))
            elif now >= watch.probe_deadline:
                watch.suspect_deadline = now + config.suspect_timeout_s
                verdicts.append((Verdict.SUSPECT, member.node_id))
        return verdicts
