"""The one application layer: user code on one side, the protocol core on the other.

``AsyncNode``, ``Node`` and the simulated network all run it: it numbers
guaranteed sends and keeps their acknowledgements, dispatches messages to
handlers (with the same replies and failure texts everywhere), hands
publications to subscribers, reports losses and membership changes, and
feeds handler outcomes back to the core. Where user code runs is the
host's choice, a :class:`~zcluster.runtime.runners.Runner`: inline on the
event loop, on a callback thread, or on the simulator's virtual clock.

Threading: every method runs on the thread that owns the core (the
node's event loop), except ``register_send``, which the blocking API calls
from the caller's thread, and the gate, which is thread-safe.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import check_guarantee
from zcluster.core.persistence import SendKept
from zcluster.delivery import (
    MessageAcknowledgement,
    MessageId,
    PublicationLoss,
    TransactionResult,
)
from zcluster.errors import (
    ConfigError,
    DeserializeError,
    NotRunning,
    RemoteError,
    RequestTimeout,
    SerializationError,
    ZclusterError,
)
from zcluster.protocol.guarantees import AckStatus, DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus
from zcluster.protocol.messages import MAX_REASON_CHARS
from zcluster.runtime.errorlog import ErrorLog
from zcluster.runtime.gate import OutboxGate
from zcluster.runtime.ledger import PUBLICATIONS, Ledger
from zcluster.runtime.runners import AnyThread, Runner
from zcluster.serialization import Serializer
from zcluster.wire import one_frame_prefix, topic_frame

log = logging.getLogger("zcluster.node")

Handler = Callable[[Any, str], Any]
SubscriptionCallback = Callable[[str, Any, str], Any]
MemberCallback = Callable[[Member, Member | None], Any]
LossCallback = Callable[[PublicationLoss], Any]
AckCallback = Callable[[MessageAcknowledgement], Any]
#: the end of a request, on the loop: the core's CompleteRequest, or None if the node stopped
RequestDone = Callable[[fx.CompleteRequest | None], None]


def checked_guarantee(guarantee: DeliveryGuarantee) -> DeliveryGuarantee:
    """A guarantee argument as the core will take it, or ConfigError."""
    if not isinstance(guarantee, DeliveryGuarantee):
        raise ConfigError(f"guarantee must be a DeliveryGuarantee, got {guarantee!r}")
    return check_guarantee(guarantee)  # UnsupportedGuarantee is a ConfigError


def reply_payload(outcome: fx.CompleteRequest | None) -> bytes:
    """A request's reply payload, or the error its outcome means (None: the node stopped)."""
    if outcome is None:
        raise NotRunning("the node stopped")
    if outcome.ok:
        return outcome.payload
    if outcome.timed_out:
        raise RequestTimeout(f"no reply to request {outcome.request_id}")
    raise RemoteError(outcome.error)


class Application:
    """Handlers, subscribers, acknowledgements and callbacks of one node."""

    def __init__(
        self,
        node_id: str,
        config: NodeConfig,
        serializer: Serializer,
        lookup_handler: Callable[[str], Handler | None],
        gate: OutboxGate,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.serializer = serializer
        self._lookup_handler = lookup_handler
        self.gate = gate
        #: callbacks of each subscribed topic
        self.subscriptions: dict[str, list[SubscriptionCallback]] = {}
        #: callbacks of each subscribed prefix (every topic that starts with it)
        self.prefix_subscriptions: dict[str, list[SubscriptionCallback]] = {}
        #: one publication to a topic's only callback; the same object every time, so
        #: that the runner hands a drain's worth over as one call (Runner.run_each)
        self._notify_one = functools.partial(_notify_one, serializer.deserialize)
        #: payload bytes handed to user code and not yet done with (runtime/ledger.py)
        self.ledger = Ledger(
            config.callback_queue_max_bytes, config.callback_queue_sender_max_bytes
        )
        #: whose share of the ledger a sender's messages are charged to (the host tells
        #: members from strangers); by default every sender has its own
        self.share_of: Callable[[str], str] = lambda sender: sender
        #: each subscribed topic by how its publications start (either form), for the
        #: fast path of fan-out
        self.topic_frames: dict[bytes, str] = {}
        #: topics whose new streams start from the publisher's oldest buffered publication
        self._replay_topics: set[str] = set()
        self.member_callbacks: list[MemberCallback] = []
        self.loss_callbacks: list[LossCallback] = []
        #: the host's own interest in this node's record (joined, left); runs on the loop
        self.on_my_change: Callable[[Member], None] = lambda member: None
        #: the host's own interest in a seed refusing to admit this node (why); on the loop
        self.on_join_refused: Callable[[str], None] = lambda reason: None
        self.incarnation = 0
        self._runner: Runner | None = None
        self._feed: Callable[[ev.Event], None] = _detached
        self._feed_soon: Callable[[ev.Event], None] = _detached
        self._send_reply: Callable[[ev.ReplyReady], None] = _detached
        self._counters: Counter[str] = Counter()
        #: guaranteed sends awaiting their final status, by message number
        self._acks: dict[int, MessageAcknowledgement] = {}
        #: guards registering acknowledgements against the sweep when the node stops
        self._acks_lock = threading.Lock()
        self._accepting_sends = False
        self._numbers = itertools.count(1)
        self._requests: dict[int, RequestDone] = {}
        #: CAUSAL messages delivered without all they depended on (for the log's pace)
        self._causal_gaps = 0
        #: transactions this node coordinates, by number: told their result (None: the
        #: node stopped first)
        self._transactions: dict[int, Callable[[TransactionResult | None], None]] = {}
        self._errors = ErrorLog(config.callback_error_log_interval_s)
        #: what the last graceful leave could not finish (None until one finished waiting)
        self.drained: fx.Drained | None = None

    def callback_failed(self, exc: BaseException, what: str = "a callback") -> None:
        """User code raised: counted (``callback_errors``), and logged with its traceback
        on this node, a bounded number of times (``callback_error_log_interval_s``)."""
        self._counters["callback_errors"] += 1
        if isinstance(exc, DeserializeError):  # the sender's doing, not the code's: one line
            what = f"{what} (reading a message: does its sender use another serializer?)"
            self._errors.report(f"node {self.node_id}: {what}", exc, traceback=False)
            return
        self._errors.report(f"node {self.node_id}: {what}", exc)

    # ------------------------------------------------------------ life cycle

    def attach(
        self,
        incarnation: int,
        runner: Runner,
        feed: Callable[[ev.Event], None],
        counters: Counter[str],
        send_reply: Callable[[ev.ReplyReady], None] | None = None,
        feed_soon: Callable[[ev.Event], None] | None = None,
    ) -> None:
        """A new run of the node: where callbacks run, how events reach its core (``feed``;
        ``feed_soon`` for handlers' outcomes, which may be batched), and how a reply
        leaves from the handler's thread (by default through the core: ``feed``)."""
        self.incarnation = incarnation
        self.drained = None
        self._runner = runner
        self._feed = feed
        self._feed_soon = feed if feed_soon is None else feed_soon
        self._send_reply = feed if send_reply is None else send_reply
        self._counters = counters
        self._numbers = itertools.count(1)
        self._accepting_sends = True

    def detach(self) -> None:
        """The node stopped: pending requests and acknowledgements fail, callbacks end."""
        self._feed = self._feed_soon = self._send_reply = _detached
        requests, self._requests = self._requests, {}
        for done in requests.values():
            done(None)
        transactions, self._transactions = self._transactions, {}
        for settle in transactions.values():
            settle(None)
        with self._acks_lock:  # from here on no send can register (it gets NotRunning)
            self._accepting_sends = False
            pending, self._acks = self._acks, {}
        for ack in pending.values():
            ack._resolve(AckStatus.FAILED, "the sending node stopped before an ack")
            self.gate.release(ack.receiver)
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # ------------------------------------------------------------ sending

    def encode(self, message: Any) -> bytes:
        """Serialize a message, refusing one larger than peers accept (max_message_bytes)."""
        payload = self.serializer.serialize(message)
        if len(payload) > self.config.max_message_bytes:
            raise_too_large(payload, self.config.max_message_bytes)
        return payload

    def checked_ttl(self, ttl: float | None, guarantee: DeliveryGuarantee) -> float:
        if ttl is None:
            return self.config.message_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
            raise ConfigError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if guarantee is DeliveryGuarantee.EXACTLY_ONCE and ttl > self.config.dedup_window_s:
            raise ConfigError(
                f"an EXACTLY_ONCE ttl ({ttl:g}s) must not exceed dedup_window_s "
                f"({self.config.dedup_window_s:g}s)"
            )
        return float(ttl)

    def block_timeout(self, timeout: float | None) -> float:
        limit = self.config.send_block_timeout_s if timeout is None else timeout
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return float(limit)

    def register_send(
        self,
        receiver: str,
        name: str,
        payload: bytes,
        guarantee: DeliveryGuarantee,
        ttl_s: float,
        callback: AckCallback | None = None,
    ) -> tuple[MessageAcknowledgement, ev.SendRequested]:
        """Number a guaranteed send that holds a place in the gate, and register its
        acknowledgement. Raises NotRunning (giving the place back) once stopping.
        Safe from any thread."""
        with self._acks_lock:
            if not self._accepting_sends:
                self.gate.release(receiver)
                raise NotRunning.of(self.node_id)
            number = next(self._numbers)
            ack = MessageAcknowledgement(
                MessageId(self.node_id, self.incarnation, number),
                receiver,
                guarantee,
                self.dispatch,
            )
            self._acks[number] = ack
        if callback is not None:
            ack.add_done_callback(callback)
        return ack, ev.SendRequested(receiver, name, payload, guarantee, number, ttl_s)

    def forget_send(self, ack: MessageAcknowledgement) -> None:
        """A registered send that never reached the core: drop it, give its place back."""
        with self._acks_lock:
            self._acks.pop(ack.message_id.number, None)
        self.gate.release(ack.receiver)

    # ------------------------------------------------------------ subscriptions

    def subscribe(
        self, topic: str, callback: SubscriptionCallback, replay: bool
    ) -> ev.TopicSubscribed | None:
        """Add a callback; returns what to tell the core (first callback, or replay)."""
        callbacks = self.subscriptions.setdefault(topic, [])
        if self._too_many_subscriptions():
            del self.subscriptions[topic]
            raise ConfigError(self._subscriptions_limit())
        callbacks.append(callback)
        self.topic_frames[topic_frame(topic)] = topic
        self.topic_frames[one_frame_prefix(topic)] = topic
        if replay:
            self._replay_topics.add(topic)
        if len(callbacks) == 1 or replay:
            return ev.TopicSubscribed(topic, replay)
        return None

    def unsubscribe(self, topic: str) -> ev.TopicUnsubscribed | None:
        """Drop every callback of ``topic``; returns what to tell the core, if anything."""
        self._replay_topics.discard(topic)
        self.topic_frames.pop(topic_frame(topic), None)
        self.topic_frames.pop(one_frame_prefix(topic), None)
        if self.subscriptions.pop(topic, None) is None:
            return None
        return ev.TopicUnsubscribed(topic)

    def subscribe_prefix(
        self, prefix: str, callback: SubscriptionCallback
    ) -> ev.PrefixSubscribed | None:
        """Add a callback of every topic starting with ``prefix``; returns what to tell the
        core (the first callback)."""
        callbacks = self.prefix_subscriptions.setdefault(prefix, [])
        if self._too_many_subscriptions():
            del self.prefix_subscriptions[prefix]
            raise ConfigError(self._subscriptions_limit())
        callbacks.append(callback)
        return ev.PrefixSubscribed(prefix) if len(callbacks) == 1 else None

    def unsubscribe_prefix(self, prefix: str) -> ev.PrefixUnsubscribed | None:
        if self.prefix_subscriptions.pop(prefix, None) is None:
            return None
        return ev.PrefixUnsubscribed(prefix)

    def _too_many_subscriptions(self) -> bool:
        count = len(self.subscriptions) + len(self.prefix_subscriptions)
        return count > self.config.subscriptions_max_count

    def _subscriptions_limit(self) -> str:
        limit = self.config.subscriptions_max_count
        return f"at most {limit} topics and prefixes per node (subscriptions_max_count)"

    def subscription_events(self) -> list[ev.Event]:
        """What a newly started core must be told of the subscriptions made before."""
        events: list[ev.Event] = [
            ev.TopicSubscribed(t, t in self._replay_topics) for t in self.subscriptions
        ]
        events += [ev.PrefixSubscribed(p) for p in self.prefix_subscriptions]
        return events

    # ------------------------------------------------------------ requests

    def expect_reply(self, request_id: int, done: RequestDone) -> None:
        self._requests[request_id] = done

    def drop_request(self, request_id: int) -> None:
        self._requests.pop(request_id, None)

    def expect_transaction(
        self, number: int, settle: Callable[[TransactionResult | None], None]
    ) -> None:
        self._transactions[number] = settle

    def restored(self, sends: Iterable[SendKept]) -> list[MessageAcknowledgement]:
        """Acknowledgements for the sends an earlier life left unsettled (the core sends
        them again); numbers for new sends follow theirs."""
        acks = []
        top = 0
        with self._acks_lock:
            for kept in sends:
                message_id = MessageId(self.node_id, kept.origin or self.incarnation, kept.number)
                ack = MessageAcknowledgement(message_id, kept.target, kept.guarantee, self.dispatch)
                self._acks[kept.number] = ack
                acks.append(ack)
                top = max(top, kept.number)
                self.gate.hold(kept.target)  # given back with its final status
            self._numbers = itertools.count(max(top + 1, next(self._numbers)))
        return acks

    def next_number(self) -> int:
        """A number for a transaction, unique in this incarnation (shared with sends)."""
        return next(self._numbers)

    def dispatch(self, fn: Callable[[], Any]) -> None:
        """Run a user callback where this node runs them (called on the node's loop)."""
        if self._runner is not None:
            self._runner.run(fn, None)

    # ------------------------------------------------------------ effects

    def appliers(self) -> dict[type, Callable[[Any], None]]:
        """How to carry out each of the core's effects meant for the application, by type
        (hosts look effects up here: one dictionary lookup per effect)."""
        return {
            fx.DeliverPublications: self._deliver_publications,
            fx.Deliver: self._deliver,
            fx.Acknowledged: self._acknowledged,
            fx.CompleteRequest: self._complete_request,
            fx.PublicationsLost: self._publications_lost,
            fx.CausalGap: self._causal_gap,
            fx.Prepare: self._prepare,
            fx.TransactionDone: self._transaction_done,
            fx.TransactionInDoubt: self._transaction_in_doubt,
            fx.MemberChanged: self._member_changed,
            fx.Drained: self._drained,
            fx.JoinRefused: lambda effect: self.on_join_refused(effect.reason),
        }

    def _drained(self, effect: fx.Drained) -> None:
        self.drained = effect

    def _complete_request(self, effect: fx.CompleteRequest) -> None:
        done = self._requests.pop(effect.request_id, None)
        if done is not None:
            done(effect)

    def _deliver(self, effect: fx.Deliver) -> None:
        runner = self._runner
        assert runner is not None
        handler = self._lookup_handler(effect.name)
        if handler is None:
            self._counters["messages_unhandled"] += 1
            text = f"no handler named {effect.name!r} on node {self.node_id}"
            if effect.request_id is not None:
                self._reply(effect, False, text.encode())
            elif effect.receipt is not None:
                self._finished(effect, text)
            return
        if type(handler) is MessageIgnored:  # the node's own: its payload is never decoded

            def call() -> Any:
                return handler(None, effect.sender)

        else:
            deserialize = self.serializer.deserialize

            def call() -> Any:
                return handler(deserialize(effect.payload), effect.sender)

        call = self.ledger.charged(self.share_of(effect.sender), len(effect.payload), call)
        if effect.request_id is not None:
            runner.run(call, AnyThread(lambda result, exc: self._handled(effect, result, exc)))
        elif effect.receipt is not None:
            runner.run(call, lambda _, exc: self._delivered(effect, exc))
        else:
            runner.run(call, None)

    def _delivered(self, effect: fx.Deliver, exc: BaseException | None) -> None:
        """A guaranteed message's handler returned or raised: its sender learns which."""
        if exc is not None:
            self.callback_failed(exc, _handler_of(effect, "a guaranteed message"))
        self._finished(effect, _describe_error(exc))

    def _finished(self, effect: fx.Deliver, error: str | None) -> None:
        assert effect.receipt is not None
        self._feed_soon(ev.DeliveryFinished(effect.sender, effect.receipt, error))

    def _handled(self, effect: fx.Deliver, result: Any, exc: BaseException | None) -> None:
        if exc is not None:
            self.callback_failed(exc, _handler_of(effect, "a request"))
            self._reply(effect, False, f"{type(exc).__name__}: {exc}".encode())
            return
        try:
            payload = self.encode(result)
        except ZclusterError as error:
            self._reply(effect, False, f"reply not serializable: {error}".encode())
            return
        self._reply(effect, True, payload)

    def _reply(self, effect: fx.Deliver, ok: bool, payload: bytes) -> None:
        """Answer a request, from whichever thread ran its handler (``send_reply``)."""
        assert effect.request_id is not None and effect.reply_address is not None
        self._send_reply(ev.ReplyReady(effect.request_id, effect.reply_address, ok, payload))

    def _deliver_publications(self, effect: fx.DeliverPublications) -> None:
        self.deliver_publications(effect.sender, effect.topic, effect.payloads)

    def deliver_publications(self, sender: str, topic: str, payloads: list[bytes]) -> None:
        """Hand publications of one sender on one topic to the topic's callbacks, in
        order (the core's verdict, or the driver's for unnumbered ones: the fast path,
        docs/architecture.md)."""
        callbacks = self.subscriptions.get(topic)
        if self.prefix_subscriptions:
            callbacks = [*(callbacks or ()), *self._prefix_callbacks(topic)]
        runner = self._runner
        if not callbacks or runner is None:
            return
        # Charged for the run, released once its last callback returned (in order).
        ledger = self.ledger
        cost = ledger.charge(PUBLICATIONS, sum(map(len, payloads)))
        if len(callbacks) == 1:
            one = callbacks[0]
            runner.run_each(self._notify_one, [(one, topic, sender, p) for p in payloads])
        else:
            for payload in payloads:
                message = _Lazy(self.serializer.deserialize, payload)
                for callback in tuple(callbacks):
                    runner.run(functools.partial(_notify, callback, topic, sender, message), None)
        runner.run(functools.partial(ledger.release, PUBLICATIONS, cost), None)

    def _prefix_callbacks(self, topic: str) -> list[SubscriptionCallback]:
        return [
            callback
            for prefix, callbacks in self.prefix_subscriptions.items()
            if topic.startswith(prefix)
            for callback in callbacks
        ]

    def _acknowledged(self, effect: fx.Acknowledged) -> None:
        settled = 0
        try:
            for number, status, reason in effect.outcomes:
                ack = self._acks.pop(number, None)
                if ack is not None:
                    ack._resolve(status, reason)
                    settled += 1
        finally:
            if settled:
                self.gate.release(effect.receiver, settled)  # one wake-up for the batch

    def _publications_lost(self, effect: fx.PublicationsLost) -> None:
        loss = PublicationLoss(effect.publisher, effect.topic, effect.first, effect.last)
        log.warning(
            "%s: lost publications %d..%d of %s on %r for good",
            self.node_id,
            loss.first,
            loss.last,
            loss.publisher,
            loss.topic,
        )
        for callback in self.loss_callbacks:
            self.dispatch(functools.partial(callback, loss))

    def _prepare(self, effect: fx.Prepare) -> None:
        """Phase one of a transaction: ask the handler's validation hook (none: yes)."""
        runner = self._runner
        assert runner is not None
        handler = self._lookup_handler(effect.name)
        coordinator = effect.key[0]
        if handler is None:
            text = f"no handler named {effect.name!r} on node {self.node_id}"
            self._feed_soon(ev.PrepareFinished(effect.key, text))
            return
        validate = handler.validate if type(handler) is ValidatedHandler else None
        if validate is None:
            self._feed_soon(ev.PrepareFinished(effect.key, None))
            return
        deserialize = self.serializer.deserialize

        def call() -> Any:
            return validate(deserialize(effect.payload), coordinator)

        def done(result: Any, exc: BaseException | None) -> None:
            error = None
            if exc is not None:
                error = f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
            elif result is False:
                error = f"refused by the validation hook of {effect.name!r}"
            self._feed_soon(ev.PrepareFinished(effect.key, error))

        runner.run(call, done)

    def _transaction_done(self, effect: fx.TransactionDone) -> None:
        settle = self._transactions.pop(effect.number, None)
        if settle is not None:
            settle(
                TransactionResult(
                    effect.committed, effect.reason, dict(effect.vetoes), effect.unanswered
                )
            )

    def _transaction_in_doubt(self, effect: fx.TransactionInDoubt) -> None:
        coordinator, _, number = effect.key
        log.warning(
            "%s: transaction %d of %s for %r aborted here without its decision, which did "
            "not come within transaction_in_doubt_max_s (its coordinator unreachable)",
            self.node_id,
            number,
            coordinator,
            effect.name,
        )

    def _causal_gap(self, effect: fx.CausalGap) -> None:
        """Told the first time, then once every CAUSAL_GAP_LOG_EVERY_COUNT (a peer could
        cause many): each is counted (causal_released_unmet, causal_released_full)."""
        self._causal_gaps += 1
        if self._causal_gaps % CAUSAL_GAP_LOG_EVERY_COUNT != 1:
            return
        origin, _, channel, _, _, seq = effect.message
        missing = ", ".join(f"{o} #{s} on {c!r}" for o, _, c, _, _, s in effect.missing[:3])
        more = f" and {len(effect.missing) - 3} more" if len(effect.missing) > 3 else ""
        log.warning(
            "%s: CAUSAL message #%d of %s on %r delivered before %s%s, which did not come in "
            "time (causal_hold_max_s) or found the hold-back full (%d such so far)",
            self.node_id,
            seq,
            origin,
            channel,
            missing,
            more,
            self._causal_gaps,
        )

    def _member_changed(self, effect: fx.MemberChanged) -> None:
        member, previous = effect.member, effect.previous
        was = "new" if previous is None else str(previous.status)
        if previous is not None and previous.incarnation != member.incarnation:
            was = f"{was} (restarted)"
        level = logging.INFO if notable_change(member, previous) else logging.DEBUG
        log.log(level, "%s: member %s %s -> %s", self.node_id, member.node_id, was, member.status)
        if member.node_id == self.node_id:
            self.on_my_change(member)
        for callback in self.member_callbacks:
            self.dispatch(functools.partial(callback, member, previous))


#: steps on the way that the next change completes (joining -> up, leaving -> left), and
#: bookkeeping (removed: a tombstone expires)
_ON_THE_WAY = frozenset({MemberStatus.JOINING, MemberStatus.LEAVING, MemberStatus.REMOVED})


#: a gap in causal order is logged the first time and then once per this many
CAUSAL_GAP_LOG_EVERY_COUNT = 1000


class ValidatedHandler:
    """A handler with a validation hook, which votes in phase one of a transaction:
    ``validate(message, coordinator)`` returning False or raising vetoes it (the
    exception's text is the reason); anything else takes the message."""

    __slots__ = ("handler", "validate")

    def __init__(self, handler: Callable[[Any, str], Any], validate: Callable[[Any, str], Any]):
        self.handler = handler
        self.validate = validate

    def __call__(self, message: Any, sender: str) -> Any:
        return self.handler(message, sender)


class MessageIgnored:
    """A handler that does not read the message it is sent (the node's built-in ones):
    its payload is not decoded, whatever it holds."""

    __slots__ = ("_answer",)

    def __init__(self, answer: Callable[[str], Any]) -> None:
        self._answer = answer

    def __call__(self, _message: Any, sender: str) -> Any:
        return self._answer(sender)


def notable_change(member: Member, previous: Member | None) -> bool:
    """A change an operator wants at INFO: a member came up, became suspect, went down,
    left or restarted. Not a step on the way, not a record that only got a new version
    (a refuted suspicion ``up -> up``), and not news of a member that was already gone
    when this node first heard of it (``new -> left``, after a restart)."""
    if previous is not None and previous.incarnation != member.incarnation:
        return True
    if member.status in _ON_THE_WAY:
        return False
    if previous is None:
        return member.status.is_live
    return previous.status is not member.status


def raise_too_large(payload: bytes, max_message_bytes: int) -> NoReturn:
    raise SerializationError(
        f"message of {len(payload)} bytes exceeds max_message_bytes ({max_message_bytes})"
    )


def _detached(event: ev.Event) -> None:
    """Where outcomes go once the node has stopped: nowhere."""


def _handler_of(effect: fx.Deliver, what: str) -> str:
    return f"handler {effect.name!r} ({what} from {effect.sender})"


def _describe_error(exc: BaseException | None) -> str | None:
    return None if exc is None else f"handler raised {type(exc).__name__}: {exc}"


class _Lazy:
    """Deserializes a payload once, on first use, in whichever thread uses it."""

    __slots__ = ("_deserialize", "_done", "_payload", "_value")

    def __init__(self, deserialize: Callable[[bytes], Any], payload: bytes) -> None:
        self._deserialize = deserialize
        self._payload = payload
        self._value: Any = None
        self._done = False

    def get(self) -> Any:
        if not self._done:
            self._value = self._deserialize(self._payload)
            self._done = True
        return self._value


def _notify(callback: SubscriptionCallback, topic: str, sender: str, message: _Lazy) -> Any:
    return callback(topic, message.get(), sender)


def _notify_one(
    deserialize: Callable[[bytes], Any], item: tuple[SubscriptionCallback, str, str, bytes]
) -> Any:
    """``_notify`` for the common case of one callback: nothing to share, nothing to cache."""
    callback, topic, sender, payload = item
    return callback(topic, deserialize(payload), sender)
