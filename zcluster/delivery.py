"""Delivery guarantees as users see them: acknowledgements, loss reports, the dedup window.

``MessageDeduplicator(capacity, expiry).is_duplicate(message_id)`` is an LRU
window bounded by count and by age, on the monotonic clock (or any
``clock`` you pass, e.g. a test's virtual one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Generator, Hashable
from typing import Any, NamedTuple

from zcluster.core.dedup import DedupWindow
from zcluster.protocol.guarantees import AckStatus, DeliveryGuarantee

log = logging.getLogger("zcluster.delivery")

__all__ = [
    "AckStatus",
    "DeliveryGuarantee",
    "DrainReport",
    "MessageAcknowledgement",
    "MessageDeduplicator",
    "MessageId",
    "PublicationLoss",
    "TransactionResult",
]


class MessageId(NamedTuple):
    """Identifies one guaranteed message: unique per sender and its incarnation."""

    sender: str
    incarnation: int
    number: int


AckCallback = Callable[["MessageAcknowledgement"], Any]


@dataclasses.dataclass(frozen=True)
class TransactionResult:
    """How a transaction ended: ``committed`` (its message went to the handler of every
    target) or aborted (to none), and why.

    ``vetoes`` maps each target that refused to its reason (its validation hook's
    exception, or why it could not take part); ``unanswered`` lists the targets that
    did not vote in time. ``bool(result)`` is ``committed``.
    """

    committed: bool
    reason: str = ""
    vetoes: dict[str, str] = dataclasses.field(default_factory=dict)
    unanswered: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.committed

    @property
    def status(self) -> str:
        return "committed" if self.committed else "aborted"


#: guards every acknowledgement's status, waiter and callbacks: held for a few
#: instructions at a time, so one lock serves all of them (none of their own to make)
_ACKS_LOCK = threading.Lock()


class MessageAcknowledgement:
    """The fate of one guaranteed send: ``PENDING``, then exactly one final status.

    ``wait(timeout)`` blocks (blocking API), ``await ack`` suspends (asyncio
    API); both return the status. Callbacks added with ``add_done_callback``
    run once, where the node runs user callbacks.
    """

    __slots__ = (
        "_callbacks",
        "_dispatch",
        "_done",
        "guarantee",
        "message_id",
        "reason",
        "receiver",
        "sender",
        "status",
        "timestamp",
    )

    def __init__(
        self,
        message_id: MessageId,
        receiver: str,
        guarantee: DeliveryGuarantee,
        dispatch: Callable[[Callable[[], Any]], None],
    ) -> None:
        self.message_id = message_id
        self.sender = message_id.sender
        self.receiver = receiver
        self.guarantee = guarantee
        #: wall-clock time (seconds since the epoch) of the send
        self.timestamp = time.time()
        self.status = AckStatus.PENDING
        #: why the message FAILED or EXPIRED; empty otherwise
        self.reason = ""
        self._dispatch = dispatch
        self._done: threading.Event | None = None  # made by the first wait(): most never wait
        self._callbacks: list[Callable[[], Any]] | None = None  # made by the first one added

    def __repr__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        to = f"{tuple(self.message_id)} to {self.receiver}"
        return f"<MessageAcknowledgement {to}: {self.status.value}{why}>"

    @property
    def done(self) -> bool:
        return self.status.is_final

    def wait(self, timeout: float | None = None) -> AckStatus:
        """Block until final or ``timeout`` seconds; returns the status (PENDING on timeout)."""
        with _ACKS_LOCK:
            if self.status.is_final:
                return self.status
            if self._done is None:
                self._done = threading.Event()
            done = self._done
        done.wait(timeout)
        return self.status

    def __await__(self) -> Generator[Any, None, AckStatus]:
        if not self.status.is_final:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not future.done():
                    future.set_result(None)

            def wake_soon() -> None:
                if not future.done():  # an await given up (cancelled) wants no wake-up
                    with contextlib.suppress(RuntimeError):  # its loop has closed since
                        loop.call_soon_threadsafe(wake)

            self._when_done(wake_soon, dispatch=False)
            yield from future.__await__()
        return self.status

    def add_done_callback(self, callback: AckCallback) -> None:
        """Call ``callback(ack)`` once the status is final (at once if it already is)."""
        self._when_done(lambda: callback(self), dispatch=True)

    def _when_done(self, fn: Callable[[], Any], *, dispatch: bool) -> None:
        with _ACKS_LOCK:
            if not self.status.is_final:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append((lambda: self._dispatch(fn)) if dispatch else fn)
                return
        fn()

    def _resolve(self, status: AckStatus, reason: str) -> bool:
        """Set the final status; False if it was already final (the first one stands)."""
        with _ACKS_LOCK:
            if self.status.is_final:
                return False
            self.status, self.reason = status, reason
            callbacks, self._callbacks = self._callbacks or (), None
            done = self._done
        if done is not None:
            done.set()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one broken waiter must not stop the others
                log.exception("acknowledgement callback of %s failed", self.message_id)
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class PublicationLoss:
    """Publications ``first..last`` (inclusive) of ``publisher`` on ``topic`` are lost for good.

    Reported when the publisher no longer holds them in its retransmit buffer,
    when it restarted or left before they could be fetched, or when a gap
    grew beyond what a subscriber may hold back.
    """

    publisher: str
    topic: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclasses.dataclass(frozen=True, slots=True)
class DrainReport:
    """What a graceful stop delivered before closing, and what it could not.

    ``stop()`` first waits (up to ``drain_timeout_s``) until every subscriber
    confirms it holds every publication and every guaranteed send is settled,
    and (up to ``leave_timeout_s``) until running handlers of guaranteed
    messages finish. ``complete`` is True when nothing was left undone.
    """

    #: subscribers that confirmed having every publication of this node
    subscribers_confirmed: tuple[str, ...] = ()
    #: subscribers that did not confirm in time or stopped being reachable
    subscribers_unconfirmed: tuple[str, ...] = ()
    #: for each of those, the numbered topics it reads and this node's last number on
    #: each: it may lack any of those publications (``{"s": {"prices": 5000}}``)
    at_stake: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    #: guaranteed sends to live members neither acknowledged nor failed
    sends_unacknowledged: int = 0
    #: handlers of guaranteed messages still running
    handlers_unfinished: int = 0
    #: AT_MOST_ONCE publications a subscriber's full queue refused for longer than
    #: ``publish_block_max_s`` (dropped for that subscriber; numbered ones are fetched
    #: again, or the subscriber does not confirm)
    publications_dropped: int = 0
    #: seconds the stop waited for all of this
    waited_s: float = 0.0
    #: False if the node closed without finishing its leave (out of time); a node that
    #: never joined has nothing to leave, nor to deliver: True
    left: bool = True

    @property
    def complete(self) -> bool:
        return self.left and not (
            self.subscribers_unconfirmed
            or self.sends_unacknowledged
            or self.handlers_unfinished
            or self.publications_dropped
        )

    def __str__(self) -> str:
        if self.complete:
            confirmed = len(self.subscribers_confirmed)
            return f"everything delivered ({confirmed} subscriber(s) confirmed)"
        parts = []
        if self.subscribers_unconfirmed:
            names = ", ".join(self._stake_of(node_id) for node_id in self.subscribers_unconfirmed)
            parts.append(
                f"{len(self.subscribers_unconfirmed)} subscriber(s) did not confirm ({names})"
            )
        if self.sends_unacknowledged:
            parts.append(f"{self.sends_unacknowledged} guaranteed send(s) unacknowledged")
        if self.handlers_unfinished:
            parts.append(f"{self.handlers_unfinished} handler(s) still running")
        if self.publications_dropped:
            parts.append(
                f"{self.publications_dropped} publication(s) dropped for a full subscriber queue"
            )
        if not self.left:
            parts.append("the leave did not finish")
        return "; ".join(parts)

    def _stake_of(self, node_id: str) -> str:
        topics = self.at_stake.get(node_id)
        if not topics:
            return node_id
        shown = ", ".join(f"{topic} up to {last}" for topic, last in topics.items())
        return f"{node_id}: may lack {shown}"


class MessageDeduplicator:
    """An LRU window of message ids, bounded by ``capacity`` ids and ``expiry`` seconds."""

    def __init__(
        self, capacity: int, expiry: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = DedupWindow(capacity, expiry)
        self._clock = clock

    @property
    def capacity(self) -> int:
        return self._window.capacity

    @property
    def expiry(self) -> float:
        return self._window.expiry

    def is_duplicate(self, message_id: Hashable) -> bool:
        """True if seen within the window; otherwise remembers it and returns False."""
        return self._window.seen(message_id, self._clock())

    def __len__(self) -> int:
        return len(self._window)
