"""A simulated disk for the durable store, with the faults of a real one.

``SimDisk`` is what ``state_dir`` is to a real node, for a node of the simulated
network (``SimNetwork.add_node(..., disk=disk)``): the node's batches of records
(``fx.Persist``) are written after ``write_delay_s``, then confirmed (``ev.Persisted``).
A crash (``SimNetwork.crash``) loses every batch not confirmed yet; with
``torn_rate``, the batch being written when the node crashed keeps a random prefix of
its records (a store whose batches are not atomic). A restarted node reads back what
the disk holds. Its randomness comes from the network's seeded generator.
"""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict

from zcluster.core.persistence import (
    DeliveryNoted,
    Record,
    RestoredState,
    SendKept,
    SendSettled,
    TxnApplied,
    TxnDecided,
    TxnForgotten,
    TxnPrepared,
)


@dataclasses.dataclass
class SimDisk:
    """The durable state of one simulated node, across its lives."""

    #: a batch is confirmed this long after the node asked for it
    write_delay_s: float = 0.0005
    #: chance that a crash tears the batch being written (a prefix of it survives)
    torn_rate: float = 0.0
    sends: OrderedDict[tuple[str, int], SendKept] = dataclasses.field(default_factory=OrderedDict)
    deliveries: OrderedDict[tuple[str, int, int], DeliveryNoted] = dataclasses.field(
        default_factory=OrderedDict
    )
    decisions: OrderedDict[tuple[int, int], TxnDecided] = dataclasses.field(
        default_factory=OrderedDict
    )
    prepared: OrderedDict[tuple[str, int, int], TxnPrepared] = dataclasses.field(
        default_factory=OrderedDict
    )
    applied: OrderedDict[tuple[str, int, int], TxnApplied] = dataclasses.field(
        default_factory=OrderedDict
    )
    #: batches asked for and not confirmed yet, oldest first
    unconfirmed: list[tuple[int, tuple[Record, ...]]] = dataclasses.field(default_factory=list)
    #: batches written, and lost or torn by crashes
    written: int = 0
    lost: int = 0
    torn: int = 0

    def submit(self, batch: int, records: tuple[Record, ...]) -> None:
        self.unconfirmed.append((batch, records))

    def confirm(self, batch: int) -> bool:
        """Make ``batch`` durable; False if a crash lost it meanwhile."""
        for i, (pending, records) in enumerate(self.unconfirmed):
            if pending == batch:
                del self.unconfirmed[i]
                self._apply(records)
                self.written += 1
                return True
        return False

    def crash(self, rng: random.Random) -> None:
        """The node died: unconfirmed batches are lost, the oldest maybe torn."""
        if self.unconfirmed and rng.random() < self.torn_rate:
            _, records = self.unconfirmed[0]
            self._apply(records[: rng.randrange(len(records) + 1)])
            self.torn += 1
        self.lost += len(self.unconfirmed)
        self.unconfirmed.clear()

    def restored(self) -> RestoredState:
        return RestoredState(
            sends=tuple(self.sends.values()),
            deliveries=tuple(self.deliveries.values()),
            decisions=tuple(self.decisions.values()),
            prepared=tuple(self.prepared.values()),
            applied=tuple(self.applied.values()),
        )

    def _apply(self, records: tuple[Record, ...]) -> None:
        for record in records:
            match record:
                case SendKept():
                    self.sends[(record.target, record.number)] = record
                case SendSettled():
                    self.sends.pop((record.target, record.number), None)
                case DeliveryNoted():
                    key = (record.sender, record.incarnation, record.number)
                    self.deliveries.pop(key, None)
                    self.deliveries[key] = record
                case TxnDecided():
                    self.decisions[(record.incarnation, record.number)] = record
                case TxnForgotten():
                    self.decisions.pop((record.incarnation, record.number), None)
                case TxnPrepared():
                    self.prepared[(record.coordinator, record.incarnation, record.number)] = record
                case TxnApplied():
                    key = (record.coordinator, record.incarnation, record.number)
                    self.prepared.pop(key, None)
                    self.applied[key] = record
