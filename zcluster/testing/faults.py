"""Network conditions and the one place that applies them to a message.

``NetworkConditions`` describes a network: latency, jitter, loss,
duplication, reordering, partitions between groups of nodes and one-way
link cuts, globally or per link. ``FaultModel.fate`` decides what happens
to one message on one link: dropped (no arrival), delivered after a delay,
or delivered more than once. The simulated network and the real-socket
harness both ask it, so a condition means the same thing on both backends.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping
from typing import Any

from zcluster.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LinkConditions:
    """What one direction of one link does to each message (times in seconds)."""

    latency: float = 0.0
    jitter: float = 0.0
    packet_loss_rate: float = 0.0
    duplicate_rate: float = 0.0
    #: probability that a message is held back by an extra ``reorder_delay`` (overtaken)
    reorder_rate: float = 0.0
    reorder_delay: float = 0.05

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not 0 <= value <= 3600:
                raise ConfigError(f"{name} must be between 0 and 3600 seconds, got {value!r}")
        for name in ("packet_loss_rate", "duplicate_rate", "reorder_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")


def _link_fields(conditions: LinkConditions) -> dict[str, Any]:
    return {f.name: getattr(conditions, f.name) for f in dataclasses.fields(LinkConditions)}


@dataclasses.dataclass(frozen=True)
class NetworkConditions(LinkConditions):
    """Conditions for the whole test network; nodes are named by their index.

    - the ``LinkConditions`` fields (latency, jitter, loss, duplication,
      reordering) apply to every link;
    - ``partition_groups=[[0, 1], [2, 3, 4]]``: no traffic between groups (a node
      in no group hears nobody and is heard by nobody);
    - ``blocked_links=[(0, 1)]``: one-way cut: node 1 no longer hears node 0,
      while node 0 still hears node 1;
    - ``links={(0, 1): LinkConditions(latency=0.2)}``: conditions that replace the
      global ones on that direction of that link.
    """

    partition_groups: Iterable[Iterable[int]] = ()
    blocked_links: Iterable[tuple[int, int]] = ()
    links: Mapping[tuple[int, int], LinkConditions] = dataclasses.field(default_factory=dict)
    _group_of: dict[int, int] = dataclasses.field(init=False, repr=False, compare=False)
    _everywhere: LinkConditions = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        groups = tuple(tuple(g) for g in self.partition_groups)
        group_of: dict[int, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                if node in group_of:
                    raise ConfigError(f"node {node} is in more than one partition group")
                group_of[node] = i
        link_fields = _link_fields(self)
        set_ = object.__setattr__  # normalise the frozen fields once
        set_(self, "partition_groups", groups)
        set_(self, "blocked_links", frozenset(self.blocked_links))
        set_(self, "links", dict(self.links))
        set_(self, "_group_of", group_of)
        set_(self, "_everywhere", LinkConditions(**link_fields))

    def link(self, source: int, destination: int) -> LinkConditions:
        found = self.links.get((source, destination))
        return found if found is not None else self._everywhere

    def connected(self, source: int, destination: int) -> bool:
        """Whether ``destination`` can hear ``source`` at all."""
        if (source, destination) in frozenset(self.blocked_links):
            return False
        if not self.partition_groups:
            return True
        return self._group_of.get(source, -1) == self._group_of.get(destination, -2)


#: a healthy network
PERFECT = NetworkConditions()


class FaultModel:
    """Decides the fate of each message from seeded randomness."""

    def __init__(self, rng: random.Random, conditions: NetworkConditions = PERFECT) -> None:
        self.rng = rng
        self.conditions = conditions

    def fate(self, source: int, destination: int) -> tuple[float, ...]:
        """Delays (seconds) after which the message arrives: () lost, two or more duplicated."""
        conditions = self.conditions
        if not conditions.connected(source, destination):
            return ()
        link = conditions.link(source, destination)
        rng = self.rng
        if link.packet_loss_rate and rng.random() < link.packet_loss_rate:
            return ()
        copies = 2 if link.duplicate_rate and rng.random() < link.duplicate_rate else 1
        delays = []
        for _ in range(copies):
            delay = link.latency + (rng.uniform(0, link.jitter) if link.jitter else 0.0)
            if link.reorder_rate and rng.random() < link.reorder_rate:
                delay += link.reorder_delay
            delays.append(delay)
        return tuple(delays)


def inject_inbound_faults(node: Any, conditions: LinkConditions, seed: int = 0) -> None:
    """Make ``node`` (a Node or AsyncNode) suffer ``conditions`` on everything it receives.

    For a node of your own outside a harness, e.g. a subscriber process whose
    link drops 20% of frames: ``inject_inbound_faults(node, LinkConditions(
    packet_loss_rate=0.2), seed=7)``. Call it before ``start()``.
    """
    faults = FaultModel(random.Random(seed), NetworkConditions(**_link_fields(conditions)))

    def fate(_: Any) -> tuple[float, ...]:
        return faults.fate(0, 0)

    if node.running:
        raise ConfigError("inject faults before start(), so they apply from the first message")
    node.inbound_faults = fate
