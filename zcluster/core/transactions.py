"""TRANSACTIONAL delivery: one message to several handlers, all or none (two-phase
commit, the sender coordinating; docs/delivery.md, "TRANSACTIONAL").

Phase one: the coordinator sends PREPARE to every participant, which asks its
handler's validation hook (the application, through ``fx.Prepare``) and votes: TXN
PREPARED (it holds the message) or REFUSED (a veto, with why). Phase two: all yes
within the timeout -> COMMIT, else ABORT; each participant applies the decision (a
commit hands the message to its handler, once) and acknowledges it. Every message is
sent again until answered, each wait has a limit (``config.py``, ``transaction_*``).

A participant that voted yes and hears no decision by the deadline (plus a grace) is
*in doubt*: it asks the coordinator and the other participants (TXN QUERY). Any
COMMIT it hears commits; any ABORT, REFUSED or UNKNOWN aborts (nobody can have
committed without everyone's yes); a participant asked while it has not voted gives
up its vote (aborts) so that it never votes yes afterwards. When every other
participant answers PREPARED and the coordinator's incarnation is over (it restarted
or left; it kept no decision), nobody heard a commit: abort (presumed abort). Else it
waits -- the blocking window of two-phase commit -- at most
``transaction_in_doubt_max_s``, then aborts (counted, reported).

The coordinator keeps each decision until every participant acknowledged it (or
``transaction_memory_s``), so a question about a transaction of this incarnation it
has no record of is answered ABORT; about an earlier incarnation, UNKNOWN.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.core.persistence import TxnApplied, TxnDecided, TxnForgotten, TxnPrepared
from zcluster.protocol import capabilities
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member
from zcluster.protocol.messages import TxnState

#: a transaction: (coordinator, its incarnation, its number)
TxnKey = tuple[str, int, int]


@dataclasses.dataclass(slots=True)
class _Coordination:
    """A transaction this node coordinates."""

    number: int
    name: str
    payload: bytes
    targets: tuple[str, ...]
    deadline: float
    votes: dict[str, TxnState]
    #: None until decided; then the decision
    committed: bool | None = None
    #: participants that acknowledged the decision
    acknowledged: set[str] = dataclasses.field(default_factory=set)
    decided_at: float = 0.0
    next_send: float = 0.0
    #: the life of this node that started it (an earlier one: restored from the store)
    incarnation: int = 0


@dataclasses.dataclass(slots=True)
class _Participation:
    """A transaction this node takes part in, not decided yet."""

    key: TxnKey
    name: str
    payload: bytes
    participants: tuple[str, ...]
    deadline: float
    #: PREPARED once voted yes; until then the validation hook runs
    prepared: bool = False
    prepared_at: float = 0.0
    #: what the other participants answered our questions
    answers: dict[str, TxnState] = dataclasses.field(default_factory=dict)
    next_query: float = 0.0
    #: a later life of the coordinator said it has no record of it (no store kept it)
    coordinator_forgot: bool = False


class Transactions(Component):
    def __init__(self, ctx: NodeContext, leaving: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._leaving = leaving
        #: by (incarnation of ours that started it, number)
        self._coordinating: dict[tuple[int, int], _Coordination] = {}
        self._participating: dict[TxnKey, _Participation] = {}
        #: decisions this node applied as a participant, and when, oldest first
        self._applied: OrderedDict[TxnKey, tuple[bool, float]] = OrderedDict()
        #: payload bytes of the transactions this node takes part in
        self._held_bytes = 0

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Prepare: self._rx_prepare, msg.Txn: self._rx_txn}

    def commands(self) -> Mapping[type, Command]:
        return {ev.TransactionStarted: self._on_start, ev.PrepareFinished: self._on_prepared}

    def __len__(self) -> int:
        return len(self._coordinating) + len(self._participating)

    # ------------------------------------------------------------ coordinating

    def _on_start(self, event: ev.TransactionStarted, now: float) -> None:
        ctx = self._ctx
        targets = tuple(dict.fromkeys(event.targets))
        refusal = self._refusal(targets)
        txn = _Coordination(
            event.number,
            event.name,
            event.payload,
            targets,
            now + event.timeout_s,
            {},
            incarnation=ctx.incarnation,
        )
        if refusal:
            ctx.counters["transactions_refused"] += 1
            self._finish(txn, False, refusal, now)
            return
        self._coordinating[(txn.incarnation, event.number)] = txn
        ctx.counters["transactions_started"] += 1
        self._send_prepares(txn, now)

    def _refusal(self, targets: tuple[str, ...]) -> str:
        ctx = self._ctx
        if not targets or len(targets) > msg.MAX_PARTICIPANTS_COUNT:
            return f"a transaction has 1 to {msg.MAX_PARTICIPANTS_COUNT} targets"
        if len(self) >= ctx.config.transactions_max_count:
            return f"too many transactions in progress ({ctx.config.transactions_max_count})"
        if ctx.node_id in targets:
            return "the coordinating node cannot be one of its transaction's targets"
        for target in targets:
            member = ctx.table.get(target)
            if member is None or member.status.is_gone:
                return f"{target!r} is not a member (unknown, left or removed)"
            if ctx.peers.lacks(target, capabilities.TXN):
                return f"{target!r} runs a release that does not take part in transactions"
        return ""

    def _send_prepares(self, txn: _Coordination, now: float) -> None:
        ctx = self._ctx
        timeout_ms = max(1, int((txn.deadline - now) * 1000))
        prepare = msg.Prepare(txn.number, txn.name, txn.targets, timeout_ms)
        for target in txn.targets:
            if target not in txn.votes:
                address = ctx.live_address(target)
                if address is not None:
                    ctx.send(address, prepare, txn.payload)
        txn.next_send = now + ctx.config.transaction_retry_s

    def _on_vote(
        self, txn: _Coordination, voter: str, state: TxnState, reason: str, now: float
    ) -> None:
        if voter not in txn.targets or txn.committed is not None:
            return
        if state is TxnState.REFUSED or state is TxnState.ABORT or state is TxnState.UNKNOWN:
            why = reason or "it could not take the message"
            self._decide(txn, False, f"{voter} vetoed: {why}", now, vetoes=((voter, why),))
            return
        txn.votes[voter] = state
        if len(txn.votes) == len(txn.targets):
            self._decide(txn, True, "", now)

    def _decide(
        self,
        txn: _Coordination,
        committed: bool,
        reason: str,
        now: float,
        vetoes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        ctx = self._ctx
        txn.committed = committed
        txn.decided_at = now
        ctx.counters["transactions_committed" if committed else "transactions_aborted"] += 1
        unanswered = tuple(t for t in txn.targets if t not in txn.votes and t not in dict(vetoes))
        # With a store, the decision is written before anyone hears it (the result too):
        # a coordinator that restarts then tells what it decided, whatever it had sent.
        ctx.persist(TxnDecided(txn.incarnation, txn.number, committed, txn.targets))
        ctx.defer(fx.TransactionDone(txn.number, committed, reason, vetoes, unanswered))
        self._send_decision(txn, now, ctx.defer)

    def _finish(self, txn: _Coordination, committed: bool, reason: str, now: float) -> None:
        """A transaction refused before it started: its result, nothing sent."""
        txn.committed, txn.decided_at = committed, now
        self._ctx.emit(fx.TransactionDone(txn.number, committed, reason, (), ()))

    def _send_decision(
        self, txn: _Coordination, now: float, out: Callable[[fx.Effect], None] | None = None
    ) -> None:
        ctx = self._ctx
        emit = out or ctx.emit
        state = TxnState.COMMIT if txn.committed else TxnState.ABORT
        decision = msg.Txn(ctx.node_id, txn.incarnation, txn.number, state, "")
        for target in txn.targets:
            if target not in txn.acknowledged:
                address = ctx.live_address(target)
                if address is not None:
                    emit(fx.Send(address, decision, b""))
        txn.next_send = now + ctx.config.transaction_retry_s

    def _acknowledged(self, txn: _Coordination, participant: str) -> None:
        """``participant`` applied the decision (or cannot): once all have, it is
        forgotten."""
        txn.acknowledged.add(participant)
        if len(txn.acknowledged) == len(txn.targets):
            self._forget(txn)

    def _forget(self, txn: _Coordination) -> None:
        del self._coordinating[(txn.incarnation, txn.number)]
        if txn.committed is not None:
            self._ctx.persist(TxnForgotten(txn.incarnation, txn.number))

    def restore(self, decisions: Iterable[TxnDecided], now: float) -> None:
        """Decisions an earlier life wrote and not every participant acknowledged: told
        again until they are."""
        for decided in decisions:
            self._coordinating[(decided.incarnation, decided.number)] = _Coordination(
                decided.number,
                "",
                b"",
                decided.targets,
                now,
                {},
                committed=decided.committed,
                decided_at=now,
                next_send=now,
                incarnation=decided.incarnation,
            )

    def _coordinator_rx(self, env: msg.Envelope, txn_msg: msg.Txn, now: float) -> None:
        """A TXN about a transaction of ours."""
        ctx = self._ctx
        state = txn_msg.state
        txn = self._coordinating.get((txn_msg.incarnation, txn_msg.number))
        if txn is None and txn_msg.incarnation != ctx.incarnation:
            if state is TxnState.QUERY:  # an earlier life's, and no store kept its decision
                self._answer(env, txn_msg, TxnState.UNKNOWN)
            return
        if state is TxnState.QUERY:
            if txn is None:  # every decision is kept until acknowledged: none was made
                self._answer(env, txn_msg, TxnState.ABORT, "the coordinator has no record")
            elif txn.committed is not None:
                decided = TxnState.COMMIT if txn.committed else TxnState.ABORT
                self._answer(env, txn_msg, decided)
            return  # undecided: it decides by its deadline, and tells
        if txn is None:
            return
        if txn.committed is None:
            self._on_vote(txn, env.sender, state, txn_msg.reason, now)
        elif state is not TxnState.PREPARED and env.sender in txn.targets:
            if txn.committed and state is not TxnState.COMMIT:
                # it cannot apply the commit (restarted without a store since its vote)
                ctx.counters["transactions_commit_lost"] += 1
            self._acknowledged(txn, env.sender)  # applied, or cannot be
        elif state is TxnState.PREPARED:  # a vote that crossed the decision: tell again
            self._send_decision(txn, now)

    # ------------------------------------------------------------ participating

    def _rx_prepare(self, env: msg.Envelope, payload: bytes, _: str | None, now: float) -> None:
        ctx = self._ctx
        prepare = env.message
        assert isinstance(prepare, msg.Prepare)
        if not ctx.is_current(env):
            ctx.counters["transactions_sender_unknown"] += 1  # it sends again once known
            return
        key = (env.sender, env.incarnation, prepare.number)
        reply = msg.Txn(env.sender, env.incarnation, prepare.number, TxnState.PREPARED, "")
        applied = self._applied.get(key)
        if applied is not None:
            reply.state = TxnState.COMMIT if applied[0] else TxnState.ABORT
            self._reply(self._address_of(env), reply)
            return
        known = self._participating.get(key)
        if known is not None:
            if known.prepared:
                self._reply(self._address_of(env), reply)  # our vote was lost
            return
        refusal = ""
        if self._leaving():
            refusal = f"node {ctx.node_id} is leaving the cluster"
        elif len(self) >= ctx.config.transactions_max_count:
            refusal = "too many transactions in progress"
        elif ctx.node_id not in prepare.participants:
            refusal = "not named among the participants"
        elif prepare.timeout_ms > ctx.config.transaction_timeout_max_s * 1000:
            limit = ctx.config.transaction_timeout_max_s
            refusal = f"timeout beyond transaction_timeout_max_s here ({limit:g} s)"
        elif self._held_bytes + len(payload) > ctx.config.transactions_held_max_bytes:
            refusal = "too many bytes of transactions held here (transactions_held_max_bytes)"
        if refusal:
            reply.state, reply.reason = TxnState.REFUSED, refusal
            self._reply(self._address_of(env), reply)
            return
        self._participating[key] = _Participation(
            key, prepare.name, payload, prepare.participants, now + prepare.timeout_ms / 1000
        )
        self._held_bytes += len(payload)
        ctx.counters["transactions_prepared"] += 1
        ctx.emit(fx.Prepare(key, prepare.name, payload))

    def _on_prepared(self, event: ev.PrepareFinished, now: float) -> None:
        """The validation hook answered (``error`` None: yes)."""
        ctx = self._ctx
        txn = self._participating.get(event.key)
        if txn is None or txn.prepared:
            return  # given up meanwhile (asked by a peer, or the coordinator is gone)
        coordinator, incarnation, number = event.key
        if event.error is None:
            txn.prepared, txn.prepared_at = True, now
            txn.next_query = txn.deadline + ctx.config.transaction_decision_grace_s
            ctx.persist(
                TxnPrepared(*txn.key, txn.name, txn.payload, txn.participants, txn.deadline)
            )
            vote = msg.Txn(coordinator, incarnation, number, TxnState.PREPARED, "")
        else:
            ctx.counters["transactions_vetoed"] += 1
            self._apply(txn, False, now)
            vote = msg.Txn(coordinator, incarnation, number, TxnState.REFUSED, event.error)
        address = ctx.live_address(coordinator)
        if address is not None:
            self._reply(address, vote)  # a yes vote once the store holds the message

    def _participant_rx(self, env: msg.Envelope, txn_msg: msg.Txn, now: float) -> None:
        """A TXN about someone else's transaction: a decision, a question or an answer."""
        key = (txn_msg.coordinator, txn_msg.incarnation, txn_msg.number)
        state = txn_msg.state
        txn = self._participating.get(key)
        from_coordinator = env.sender == txn_msg.coordinator
        if state is TxnState.QUERY:
            self._answer(env, txn_msg, self._state_of(key, giving_up=True, now=now))
            return
        if state is TxnState.COMMIT or state is TxnState.ABORT:
            committed = state is TxnState.COMMIT
            if txn is not None and (txn.prepared or not committed):
                self._apply(txn, committed, now)
            if from_coordinator:  # acknowledge the decision: as applied here, if it was
                applied = self._applied.get(key)
                if applied is not None:
                    ack = TxnState.COMMIT if applied[0] else TxnState.ABORT
                else:  # never prepared here, or forgotten: nothing to commit
                    ack = TxnState.UNKNOWN if committed else TxnState.ABORT
                self._answer(env, txn_msg, ack)
            return
        if txn is not None and txn.prepared and from_coordinator and state is TxnState.UNKNOWN:
            txn.coordinator_forgot = True  # its later life kept no decision
            self._settle_if_nobody_committed(txn, now)
        elif txn is not None and txn.prepared and env.sender in txn.participants:
            txn.answers[env.sender] = state  # a peer's answer to our question
            if state is not TxnState.PREPARED:
                self._apply(txn, False, now)  # it never voted yes, or forgot: no commit
            else:
                self._settle_if_nobody_committed(txn, now)

    def _state_of(self, key: TxnKey, *, giving_up: bool, now: float) -> TxnState:
        applied = self._applied.get(key)
        if applied is not None:
            return TxnState.COMMIT if applied[0] else TxnState.ABORT
        txn = self._participating.get(key)
        if txn is None:
            if giving_up:  # its PREPARE may still come: it will be refused (asked first)
                self._remember(key, False, now)
                self._ctx.persist(TxnApplied(*key, False, now))
            return TxnState.UNKNOWN
        if txn.prepared:
            return TxnState.PREPARED
        if giving_up:  # asked before voting: never vote yes now, so the asker may abort
            self._ctx.counters["transactions_given_up"] += 1
            self._apply(txn, False, now)
            return TxnState.ABORT
        return TxnState.UNKNOWN

    def _settle_if_nobody_committed(self, txn: _Participation, now: float) -> None:
        """Every other participant is prepared too, and the coordinator is gone, or its
        later life has no record (no store kept its decision): nobody heard a commit, and
        nobody will (presumed abort)."""
        others = [p for p in txn.participants if p != self._ctx.node_id]
        if not all(txn.answers.get(p) is TxnState.PREPARED for p in others):
            return
        member = self._ctx.table.get(txn.key[0])
        if member is None or member.status.is_gone or txn.coordinator_forgot:
            self._ctx.counters["transactions_presumed_abort"] += 1
            self._apply(txn, False, now)

    def _apply(self, txn: _Participation, committed: bool, now: float) -> None:
        """Apply a decision; with a store, its handler is given the message once the
        store says so (after a crash it is not given it again)."""
        ctx = self._ctx
        del self._participating[txn.key]
        self._held_bytes -= len(txn.payload)
        self._remember(txn.key, committed, now)
        ctx.persist(TxnApplied(*txn.key, committed, now))
        if committed:
            ctx.counters["transactions_delivered"] += 1
            ctx.defer(fx.Deliver(txn.key[0], txn.name, txn.payload))
        else:
            ctx.counters["transactions_discarded"] += 1

    def _remember(self, key: TxnKey, committed: bool, now: float) -> None:
        self._applied[key] = (committed, now)
        if len(self._applied) > self._ctx.config.transactions_remembered_max_count:
            self._applied.popitem(last=False)

    def restore_participation(
        self, prepared: Iterable[TxnPrepared], applied: Iterable[TxnApplied], now: float
    ) -> None:
        """Take back what an earlier life voted yes on and had no decision for, and the
        decisions it applied: a decision that comes again is not applied twice."""
        grace = self._ctx.config.transaction_decision_grace_s
        for done in applied:
            self._remember((done.coordinator, done.incarnation, done.number), done.committed, now)
        for vote in prepared:
            key = (vote.coordinator, vote.incarnation, vote.number)
            if key in self._applied:
                continue
            self._participating[key] = _Participation(
                key,
                vote.name,
                vote.payload,
                vote.participants,
                vote.deadline,
                prepared=True,
                prepared_at=now,
                next_query=max(now, vote.deadline + grace),
            )
            self._held_bytes += len(vote.payload)

    def _reply(self, address: str, message: msg.Txn) -> None:
        """Send what this node says about a transaction once the store holds it."""
        self._ctx.defer(fx.Send(address, message, b""))

    def _answer(self, env: msg.Envelope, about: msg.Txn, state: TxnState, reason: str = "") -> None:
        answer = msg.Txn(about.coordinator, about.incarnation, about.number, state, reason)
        self._reply(self._address_of(env), answer)

    def _address_of(self, env: msg.Envelope) -> str:
        member = self._ctx.table.get(env.sender)
        assert member is not None  # callers take TXN and PREPARE from members only
        return member.address

    # ------------------------------------------------------------ both

    def _rx_txn(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        if not ctx.is_current(env):
            ctx.counters["transactions_sender_unknown"] += 1
            return
        txn_msg = env.message
        assert isinstance(txn_msg, msg.Txn)
        if txn_msg.coordinator == ctx.node_id:
            self._coordinator_rx(env, txn_msg, now)
        else:
            self._participant_rx(env, txn_msg, now)

    def tick(self, now: float) -> None:
        ctx = self._ctx
        config = ctx.config
        for txn in list(self._coordinating.values()):
            if txn.committed is None:
                if now >= txn.deadline:
                    unanswered = [t for t in txn.targets if t not in txn.votes]
                    why = f"no vote within the timeout from {', '.join(unanswered)}"
                    self._decide(txn, False, why, now)
                elif now >= txn.next_send:
                    self._send_prepares(txn, now)
            elif now >= txn.decided_at + config.transaction_memory_s:
                ctx.counters["transactions_unacknowledged"] += 1
                self._forget(txn)
            elif now >= txn.next_send:
                self._send_decision(txn, now)
        for part in list(self._participating.values()):
            if not part.prepared:
                if now >= part.deadline + config.transaction_decision_grace_s:
                    self._apply(part, False, now)  # its hook never answered: no vote now
                continue
            doubt_from = max(part.prepared_at, part.deadline + config.transaction_decision_grace_s)
            if now >= doubt_from + config.transaction_in_doubt_max_s:
                ctx.counters["transactions_in_doubt_aborted"] += 1
                ctx.emit(fx.TransactionInDoubt(part.key, part.name))
                self._apply(part, False, now)
            elif now >= part.next_query:
                self._ask(part, now)
        applied = self._applied
        while applied and next(iter(applied.values()))[1] <= now - config.transaction_memory_s:
            applied.popitem(last=False)

    def _ask(self, txn: _Participation, now: float) -> None:
        """In doubt: ask the coordinator and every other participant."""
        ctx = self._ctx
        coordinator, incarnation, number = txn.key
        query = msg.Txn(coordinator, incarnation, number, TxnState.QUERY, "")
        txn.answers.clear()  # only this round's answers count (a peer may have moved on)
        for node_id in (coordinator, *txn.participants):
            address = ctx.live_address(node_id) if node_id != ctx.node_id else None
            if address is not None:
                ctx.send(address, query)
        txn.next_query = now + ctx.config.transaction_retry_s
        self._settle_if_nobody_committed(txn, now)

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        restarted = previous is not None and member.incarnation > previous.incarnation
        for txn in list(self._coordinating.values()):
            if node_id not in txn.targets:
                continue
            if member.status.is_gone:
                if txn.committed is None:
                    self._decide(txn, False, f"{node_id} left the cluster", now)
                self._acknowledged(txn, node_id)
            elif restarted and txn.committed is None and node_id in txn.votes:
                # its vote was its earlier life's, which held the message in memory
                why = f"{node_id} restarted after voting"
                self._decide(txn, False, why, now, vetoes=((node_id, why),))
        for part in list(self._participating.values()):
            coordinator, incarnation, _ = part.key
            if node_id != coordinator:
                continue
            if member.incarnation > incarnation or member.status.is_gone:
                if not part.prepared:
                    self._apply(part, False, now)  # no vote will be counted
                else:
                    self._settle_if_nobody_committed(part, now)
