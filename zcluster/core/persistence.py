"""The persistence port: what a node writes to its durable store, and when it waits.

The core never touches a disk. With a store (``state_dir``), components note
*records* as they change what must survive a crash (``NodeContext.persist``), and may
hold an effect back until those records are durable (``NodeContext.defer``). At the
end of each loop turn the records of the turn leave in one batch (``fx.Persist``);
the host writes it and answers ``ev.Persisted``, which releases what the batch held
back. Without a store both calls cost nothing: records are dropped, effects leave.

What survives (docs/delivery.md, "Durability"): guaranteed sends not yet settled (the
outbox), the exactly-once window (each id noted *before* its handler is given the
message: "the handler ran" means it was started), a coordinator's decisions, and a
participant's yes votes and applied decisions (each written before it is told).
A restarted node is handed them back as a :class:`RestoredState`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext
from zcluster.protocol.guarantees import DeliveryGuarantee


@dataclasses.dataclass(frozen=True, slots=True)
class SendKept:
    """A guaranteed send taken into the outbox to ``target`` (``deadline``: its ttl's end,
    on the core's clock)."""

    target: str
    number: int
    name: str
    payload: bytes
    guarantee: DeliveryGuarantee
    deadline: float
    #: the incarnation that numbered it: after a restart it keeps its id (exactly-once)
    origin: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SendSettled:
    """The send ``number`` to ``target`` reached its final status: it leaves the store."""

    target: str
    number: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryNoted:
    """An exactly-once message, by its id: handed to its handler (``finished`` False), or
    its handler returned (``error`` None) or failed; ``at``: when, on the core's clock."""

    sender: str
    incarnation: int
    number: int
    finished: bool
    error: str | None
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class TxnDecided:
    """This node, coordinating, decided its transaction ``number`` (of its life
    ``incarnation``); kept until every participant acknowledged it (``TxnForgotten``)."""

    incarnation: int
    number: int
    committed: bool
    targets: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TxnForgotten:
    incarnation: int
    number: int


@dataclasses.dataclass(frozen=True, slots=True)
class TxnPrepared:
    """This node voted yes on transaction ``number`` of ``coordinator`` (its life
    ``incarnation``) and holds its message until the decision (``deadline``: the end of
    its timeout, on the core's clock)."""

    coordinator: str
    incarnation: int
    number: int
    name: str
    payload: bytes
    participants: tuple[str, ...]
    deadline: float


@dataclasses.dataclass(frozen=True, slots=True)
class TxnApplied:
    """This node applied the decision of that transaction (a commit: its handler was
    given the message); it replaces the TxnPrepared, if there was one."""

    coordinator: str
    incarnation: int
    number: int
    committed: bool
    at: float


Record = (
    SendKept | SendSettled | DeliveryNoted | TxnDecided | TxnForgotten | TxnPrepared | TxnApplied
)


@dataclasses.dataclass(frozen=True, slots=True)
class RestoredState:
    """What a store held when the node started: the survivors of its earlier lives."""

    #: sends not settled, oldest first
    sends: tuple[SendKept, ...] = ()
    #: the exactly-once window, oldest first
    deliveries: tuple[DeliveryNoted, ...] = ()
    #: decisions of transactions not acknowledged by every participant
    decisions: tuple[TxnDecided, ...] = ()
    #: the incarnation of the life that wrote them (0: none)
    incarnation: int = 0
    #: transactions this node voted yes on and had no decision for
    prepared: tuple[TxnPrepared, ...] = ()
    #: decisions this node applied as a participant, oldest first
    applied: tuple[TxnApplied, ...] = ()


class Persistence(Component):
    """Sends each turn's records in one batch, and releases what waited for it."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._batches = 0
        #: every batch not written yet, oldest first, with the effects it holds back
        self._unwritten: dict[int, list[fx.Effect]] = {}

    def commands(self) -> Mapping[type, Command]:
        return {ev.Persisted: self._on_persisted}

    @property
    def flush_due(self) -> bool:
        ctx = self._ctx
        return bool(ctx.records) or bool(ctx.deferred)

    def end_turn(self, now: float) -> None:
        ctx = self._ctx
        if ctx.records:
            self._batches += 1
            ctx.counters["state_batches"] += 1
            ctx.counters["state_records"] += len(ctx.records)
            ctx.emit(fx.Persist(self._batches, tuple(ctx.records)))
            ctx.records.clear()
            self._unwritten[self._batches] = ctx.deferred
        elif ctx.deferred:
            # Nothing new to write: what waits may depend on a batch still being written
            # (an answer about a decision written this turn or just before), or on none.
            if self._unwritten:
                self._unwritten[next(reversed(self._unwritten))].extend(ctx.deferred)
            else:
                ctx.out.extend(ctx.deferred)
        else:
            return
        ctx.deferred = []

    def _on_persisted(self, event: ev.Persisted, _: float) -> None:
        """Batch ``event.batch`` is written, and so is every earlier one: hosts write them
        in order (what an effect waits for may be in an earlier batch)."""
        unwritten = self._unwritten
        while unwritten and next(iter(unwritten)) <= event.batch:
            for effect in unwritten.pop(next(iter(unwritten))):
                self._ctx.emit(effect)
