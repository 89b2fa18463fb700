"""A graceful leave: a normal exit loses nothing the node accepted.

On LeaveRequested the node refuses new application messages and waits until
what it accepted is done, then ``Gossip`` announces LEAVING and, a heartbeat
later, LEFT:

- the handlers of guaranteed messages it handed out have reported back (their
  senders hear DELIVERED, not "left"), for at most ``leave_timeout_s``;
- its guaranteed sends to live members are acknowledged or failed, and every
  subscriber confirmed it holds every publication, for at most
  ``drain_timeout_s``.

A subscriber confirms with FLUSHED. Each one that listens to us and reads
FLUSH (capability ``drain``) gets a FLUSH on its personal frame: it leaves
our PUB after everything we published, and one connection keeps its order,
so once the subscriber reads it, it has read all that came before; the FLUSH
carries our last numbers on its numbered topics, so it fetches what it
missed first (we serve FETCH all the while) or reports it lost. FLUSH is sent
again every ``drain_retry_s`` until answered: the subscriber's queue may have
been full when it went out. What was not confirmed in time is reported
(``Drained``), never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import DRAIN
from zcluster.protocol.members import MemberStatus

_LEAVING_OR_LEFT = (MemberStatus.LEAVING, MemberStatus.LEFT)
#: a subscriber incarnation and the topics it reads from us
Listening = tuple[str, int, tuple[str, ...]]


class Departure(Component):
    def __init__(
        self,
        ctx: NodeContext,
        *,
        started: Callable[[], bool],
        listening: Callable[[], list[Listening]],
        latest: Callable[[str], int],
        handlers_running: Callable[[], int],
        sends_pending: Callable[[], int],
        announce_leaving: Callable[[float], None],
    ) -> None:
        self._ctx = ctx
        self._started = started
        self._listening = listening
        self._latest = latest
        self._handlers_running = handlers_running
        self._sends_pending = sends_pending
        self._announce_leaving = announce_leaving
        #: set once a leave was asked for: new application messages are refused
        self.leaving = False
        self._draining = False
        self._began = 0.0
        self._handlers_until = 0.0
        self._drain_until = 0.0
        self._next_flush = 0.0
        #: subscribers yet to confirm, with their incarnation and topics (in the order found)
        self._awaiting: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._confirmed: list[str] = []
        #: subscribers that stopped being reachable, with the topics they read from us
        self._unreachable: dict[str, tuple[str, ...]] = {}

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Flushed: self._rx_flushed}

    def commands(self) -> Mapping[type, Command]:
        return {ev.LeaveRequested: self._on_leave}

    def _on_leave(self, _: ev.LeaveRequested, now: float) -> None:
        ctx = self._ctx
        if not self._started() or self.leaving or ctx.me.status in _LEAVING_OR_LEFT:
            return
        self.leaving = self._draining = True
        config = ctx.config
        self._began = now
        self._handlers_until = now + config.leave_timeout_s
        self._drain_until = now + config.drain_timeout_s
        self._next_flush = now
        capabilities_of = ctx.peers.capabilities_of
        table = ctx.table
        for node_id, incarnation, topics in self._listening():
            member = table.get(node_id)
            leaving = member is not None and member.status in _LEAVING_OR_LEFT
            if not leaving and DRAIN in (capabilities_of(node_id) or ()):
                self._awaiting[node_id] = (incarnation, topics)
        self._step(now)

    def tick(self, now: float) -> None:
        if self._draining:
            self._step(now)

    def _step(self, now: float) -> None:
        ctx = self._ctx
        if self._awaiting:
            self._drop_unreachable()
        if self._awaiting and now >= self._next_flush:
            self._next_flush = now + ctx.config.drain_retry_s
            for node_id, (_, topics) in self._awaiting.items():
                positions = self._positions(topics)
                ctx.emit(fx.Publish(None, msg.Flush(positions, to=node_id), b""))
                ctx.counters["flushes_sent"] += 1
        handlers = self._handlers_running()
        sends = self._sends_pending()
        handlers_done = not handlers or now >= self._handlers_until
        drained = not (self._awaiting or sends) or now >= self._drain_until
        if not (handlers_done and drained):
            return
        self._draining = False
        unconfirmed = (*self._unreachable, *self._awaiting)
        read = {**self._unreachable, **{n: topics for n, (_, topics) in self._awaiting.items()}}
        ctx.counters["leave_handlers_unfinished"] += handlers
        ctx.counters["leave_sends_unacknowledged"] += sends
        ctx.counters["leave_subscribers_unconfirmed"] += len(unconfirmed)
        at_stake = tuple((node_id, self._positions(read[node_id])) for node_id in unconfirmed)
        waited_s = now - self._began
        ctx.emit(
            fx.Drained(tuple(self._confirmed), unconfirmed, at_stake, sends, handlers, waited_s)
        )
        self._announce_leaving(now)

    def _positions(self, topics: tuple[str, ...]) -> tuple[msg.Position, ...]:
        """Our last number on each of these topics that we number."""
        latest = self._latest
        return tuple((t, seq) for t in topics if (seq := latest(t)))

    def _drop_unreachable(self) -> None:
        """Subscribers that leave are not waited for (they chose to stop reading); those no
        longer live in the incarnation we wait for cannot confirm: reported."""
        table = self._ctx.table
        for node_id, (incarnation, topics) in list(self._awaiting.items()):
            member = table.get(node_id)
            if member is not None and member.incarnation == incarnation:
                if member.status in _LEAVING_OR_LEFT:
                    del self._awaiting[node_id]
                    continue
                if member.status.is_live:
                    continue
            del self._awaiting[node_id]
            self._unreachable[node_id] = topics

    def _rx_flushed(self, env: msg.Envelope, _: bytes, __: str | None, ___: float) -> None:
        waited = self._awaiting.get(env.sender)
        if waited is not None and waited[0] == env.incarnation:
            del self._awaiting[env.sender]
            self._confirmed.append(env.sender)
