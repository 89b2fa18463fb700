"""AsyncNode: the asyncio API of a cluster node."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from zcluster.address import WILDCARD_HOSTS, format_address, parse_address
from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.guarantees import AckStatus, DeliveryGuarantee
from zcluster.core.members import Member, MemberStatus
from zcluster.core.node import NodeCore
from zcluster.delivery import MessageAcknowledgement, MessageId, PublicationLoss
from zcluster.errors import (
    ConfigError,
    NotRunning,
    RemoteError,
    RequestTimeout,
    SerializationError,
    UnknownMember,
    WireError,
    ZclusterError,
)
from zcluster.runtime.driver import Driver
from zcluster.runtime.gate import OutboxGate
from zcluster.runtime.runners import InlineRunner, Runner
from zcluster.runtime.transport import Transport
from zcluster.serialization import MsgpackSerializer, Serializer
from zcluster.wire import check_name, check_topic

log = logging.getLogger("zcluster.node")

Handler = Callable[[Any, str], Any]
SubscriptionCallback = Callable[[str, Any, str], Any]
MemberCallback = Callable[[Member, Member | None], Any]
LossCallback = Callable[[PublicationLoss], Any]
AckCallback = Callable[[MessageAcknowledgement], Any]
RunnerFactory = Callable[[asyncio.AbstractEventLoop, Driver], Runner]

#: built-in handler answering with this node's membership view (tests, tools)
VIEW_HANDLER = "zcluster.view"
#: publish() and send() return to the event loop this often, so heartbeats keep flowing
YIELD_EVERY_CALLS = 64


class JoinTimeout(ZclusterError, TimeoutError):
    """The node did not join through its seeds in time."""


def new_incarnation() -> int:
    """Start time in milliseconds above 20 random bits: unique and larger after a restart."""
    return (time.time_ns() // 1_000_000) << 20 | random.SystemRandom().getrandbits(20)


def _checked(check: Callable[..., str], value: str, *what: str) -> str:
    """Run a wire-level check, reporting a bad argument as ConfigError."""
    try:
        return check(value, *what)
    except WireError as exc:
        raise ConfigError(str(exc)) from None


def _validate_topic(topic: str) -> str:
    return _checked(check_topic, topic)


def _checked_guarantee(guarantee: DeliveryGuarantee) -> DeliveryGuarantee:
    if not isinstance(guarantee, DeliveryGuarantee):
        raise ConfigError(f"guarantee must be a DeliveryGuarantee, got {guarantee!r}")
    if guarantee in (DeliveryGuarantee.CAUSAL, DeliveryGuarantee.TRANSACTIONAL):
        raise ConfigError(
            f"DeliveryGuarantee.{guarantee.name} is not available yet: causal and "
            "transactional delivery come in a later release; use AT_LEAST_ONCE, "
            "EXACTLY_ONCE or ORDERED"
        )
    return guarantee


class AsyncNode:
    """A cluster node for asyncio programs (``async with AsyncNode(...) as node``)."""

    def __init__(
        self,
        node_id: str,
        bind: str = "127.0.0.1:0",
        seeds: Iterable[str] = (),
        advertise: str | None = None,
        *,
        serializer: Serializer | None = None,
        config: NodeConfig | None = None,
        **options: Any,
    ) -> None:
        self.node_id = _checked(check_name, node_id, "node id")
        parse_address(bind, allow_port_zero=True, allow_wildcard=True)
        self.seeds = tuple(seeds)
        for seed in self.seeds:
            parse_address(seed)
        if advertise is not None:
            parse_address(advertise, allow_port_zero=True)
        self.bind = bind
        self.advertise = advertise
        self.serializer: Serializer = serializer or MsgpackSerializer()
        self.config = (
            (config or NodeConfig()).replace(**options) if options else (config or NodeConfig())
        )
        self._handlers: dict[str, Handler] = {VIEW_HANDLER: self._describe_view}
        self._subscriptions: dict[str, list[SubscriptionCallback]] = {}
        self._replay_topics: set[str] = set()
        self._member_callbacks: list[MemberCallback] = []
        self._loss_callbacks: list[LossCallback] = []
        #: guaranteed sends awaiting their final status, by message number
        self._acks: dict[int, MessageAcknowledgement] = {}
        #: guards registering acknowledgements against the sweep when the node stops
        self._acks_lock = threading.Lock()
        self._accepting_sends = False
        #: guaranteed messages handed to handlers that have not returned yet
        self._handling = 0
        self._message_numbers = itertools.count(1)
        self.gate = OutboxGate(self.config.outbox_max_count)
        self._requests: dict[int, asyncio.Future[bytes]] = {}
        self._request_ids = itertools.count(random.SystemRandom().getrandbits(32))
        self._driver: Driver | None = None
        self._runner: Runner | None = None
        self._runner_factory: RunnerFactory | None = None
        #: fault injection for zcluster.testing, installed before the first message is read
        self.inbound_faults: Callable[[ev.EnvelopeReceived], tuple[float, ...]] | None = None
        self._joined: asyncio.Event | None = None
        self._left: asyncio.Event | None = None
        self.incarnation = 0
        self._calls_since_yield = 0

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> AsyncNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._driver is not None

    async def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Bind, start joining, and (with ``wait``) return once joined.

        A node without seeds forms a new cluster at once. Raises JoinTimeout
        (after stopping the node) if no seed admitted it within ``timeout``
        (default ``join_timeout_s``). Without ``wait`` the node keeps trying
        in the background.
        """
        if self._driver is not None:
            return
        loop = asyncio.get_running_loop()
        transport = Transport(self.config)
        try:
            router_port, pub_port = transport.bind(self.bind)
            address, pub_address = self._advertised(router_port, pub_port)
        except BaseException:
            transport.close()
            raise
        self.incarnation = new_incarnation()
        core = NodeCore(
            self.node_id,
            self.incarnation,
            address,
            pub_address,
            seeds=self.seeds,
            config=self.config,
            rng=random.Random(int.from_bytes(os.urandom(8), "big")),
        )
        self._joined, self._left = asyncio.Event(), asyncio.Event()
        self._driver = driver = Driver(core, transport, self, loop)
        self._accepting_sends = True
        self._handling = 0
        driver.inbound_faults = self.inbound_faults
        factory = self._runner_factory or (lambda lp, d: InlineRunner(lp, self._count_error))
        self._runner = factory(loop, driver)
        driver.start()
        driver.feed_many(
            [ev.TopicSubscribed(t, t in self._replay_topics) for t in self._subscriptions]
        )
        log.info("node %s listening on %s (pub %s)", self.node_id, address, pub_address)
        if not wait:
            return
        try:
            await self.wait_joined(timeout)
        except BaseException:  # JoinTimeout, or the caller gave up (cancelled)
            await self.stop()
            raise

    async def wait_joined(self, timeout: float | None = None) -> None:
        """Wait until this node is up in the cluster; JoinTimeout after ``timeout``."""
        driver = self._require()
        if driver.core.me.status is MemberStatus.UP or self._joined is None:
            return
        limit = self.config.join_timeout_s if timeout is None else timeout
        try:
            await asyncio.wait_for(self._joined.wait(), limit)
        except TimeoutError:
            why = "no seed admitted it"
            if driver.counters["node_id_conflicts"]:
                why = "another running process uses this node id"
            raise JoinTimeout(
                f"node {self.node_id} could not join through seeds {', '.join(self.seeds)} "
                f"within {limit:g}s: {why}"
            ) from None

    async def stop(self) -> None:
        """Leave the cluster gracefully and close every socket."""
        driver = self._driver
        if driver is None:
            return
        try:
            if self._left is not None and driver.core.me.status is not MemberStatus.JOINING:
                await self._finish_handling(driver)
                driver.feed(ev.LeaveRequested())
                await asyncio.wait_for(self._left.wait(), self.config.leave_timeout_s)
        except TimeoutError:
            log.warning("node %s: leave not confirmed in time; closing", self.node_id)
        finally:
            self._shut(driver)

    async def _finish_handling(self, driver: Driver) -> None:
        """Before leaving, let running handlers of guaranteed messages finish (at most
        ``leave_timeout_s``) and acknowledge them: their senders learn they were
        DELIVERED instead of FAILED because we left. Nothing new is read meanwhile."""
        if not self._handling:
            return
        driver.pause_reading()
        settled = await self.wait_for(
            lambda: not self._handling and not driver.core.flush_due,
            self.config.leave_timeout_s,
        )
        if not settled:
            log.warning(
                "node %s: %d guaranteed message(s) still being handled; leaving anyway",
                self.node_id,
                self._handling,
            )

    async def abort(self) -> None:
        """Stop at once without leaving, as a crash would: peers must detect the failure.

        Meant for tests (``zcluster.testing`` crashes nodes with it).
        """
        driver = self._driver
        if driver is not None:
            driver.transport.abandon()
            self._shut(driver)

    def _shut(self, driver: Driver) -> None:
        """Close everything, whatever happened during the leave."""
        self._driver = None
        for future in self._requests.values():
            if not future.done():
                future.set_exception(NotRunning(f"node {self.node_id} stopped"))
        self._requests.clear()
        with self._acks_lock:  # from here on no send can register (it gets NotRunning)
            self._accepting_sends = False
            pending, self._acks = self._acks, {}
        for ack in pending.values():
            ack._resolve(AckStatus.FAILED, "the sending node stopped before an ack")
            self.gate.release(ack.receiver)
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        driver.close()
        log.info("node %s stopped", self.node_id)

    def _advertised(self, router_port: int, pub_port: int) -> tuple[str, str]:
        bind_host, bind_port = parse_address(self.bind, allow_port_zero=True, allow_wildcard=True)
        if self.advertise is None:
            if bind_host in WILDCARD_HOSTS:
                raise ConfigError(
                    f"binding {self.bind} listens on every interface; give the address "
                    "peers should use (--advertise HOST:PORT, or advertise= in Python)"
                )
            host, port = bind_host, 0
        else:
            host, port = parse_address(self.advertise, allow_port_zero=True)
            if host in WILDCARD_HOSTS:
                raise ConfigError(f"advertise {self.advertise} is not an address peers can reach")
        if port == 0:
            return format_address(host, router_port), format_address(host, pub_port)
        if bind_port == 0:
            raise ConfigError("with a random bind port, advertise HOST:0 (ports follow the bind)")
        return format_address(host, port), format_address(host, port + (pub_port - router_port))

    # ------------------------------------------------------------ queries

    @property
    def address(self) -> str:
        """The advertised ROUTER address (``host:port``) of the running node."""
        return self._require().core.address

    @property
    def pub_address(self) -> str:
        return self._require().core.me.pub_address

    def members(self) -> list[Member]:
        """Every known member with its state, this node included."""
        return self._require().core.members()

    def member(self, node_id: str) -> Member | None:
        return self._require().core.member(node_id)

    def view_digest(self) -> str:
        """A short hash of the membership view; equal on nodes that agree."""
        return self._require().core.digest()

    def subscribers(self, topic: str) -> frozenset[str]:
        """Members that confirmed they receive this node's publications on ``topic``."""
        return self._require().core.subscribers(topic)

    def listeners(self) -> frozenset[str]:
        """Members that confirmed they receive this node's publications (any topic)."""
        return self._require().core.listeners()

    def stats(self) -> dict[str, int]:
        """Counters (messages, rejected frames, probes, suspicions, ...) and connection gauges."""
        driver = self._driver
        if driver is None:
            return {}
        return {**driver.counters, **driver.transport.gauges()}

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float, interval: float | None = None
    ) -> bool:
        """Poll ``predicate`` on the node's loop until true or ``timeout``; returns the outcome."""
        step = interval or self.config.tick_interval_s
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(step)
        return True

    # ------------------------------------------------------------ registration

    def register(self, name: str, handler: Handler) -> None:
        """Handle direct messages named ``name`` with ``handler(message, sender)``.

        The handler's return value is the reply to a request.
        """
        self._handlers[_checked(check_name, name, "handler name")] = handler

    def on_member_change(self, callback: MemberCallback) -> None:
        """Call ``callback(member, previous)`` whenever a member's record changes."""
        self._member_callbacks.append(callback)

    def on_publication_loss(self, callback: LossCallback) -> None:
        """Call ``callback(loss)`` when guaranteed publications are lost for good.

        ``loss`` is a :class:`~zcluster.PublicationLoss` with the exact range;
        the ``publications_lost`` counter in ``stats()`` counts them too.
        """
        self._loss_callbacks.append(callback)

    async def subscribe(
        self, topic: str, callback: SubscriptionCallback, *, replay: bool = False
    ) -> None:
        """Receive publications on ``topic`` (exact match): ``callback(topic, message, sender)``.

        Guaranteed publications start at each publisher's current position;
        with ``replay`` they start from the oldest one its buffer still holds.
        """
        self._subscribe(topic, callback, replay)

    async def unsubscribe(self, topic: str) -> None:
        self._replay_topics.discard(topic)
        if self._subscriptions.pop(topic, None) is not None and self._driver is not None:
            self._driver.feed(ev.TopicUnsubscribed(topic))

    def _subscribe(self, topic: str, callback: SubscriptionCallback, replay: bool) -> None:
        _validate_topic(topic)
        callbacks = self._subscriptions.setdefault(topic, [])
        if len(self._subscriptions) > self.config.subscriptions_max_count:
            del self._subscriptions[topic]
            raise ConfigError(f"at most {self.config.subscriptions_max_count} topics per node")
        callbacks.append(callback)
        if replay:
            self._replay_topics.add(topic)
        if (len(callbacks) == 1 or replay) and self._driver is not None:
            self._driver.feed(ev.TopicSubscribed(topic, replay))

    # ------------------------------------------------------------ messaging

    async def send(
        self,
        node_id: str,
        name: str,
        message: Any,
        *,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_LEAST_ONCE,
        ttl: float | None = None,
        callback: AckCallback | None = None,
        timeout: float | None = None,
    ) -> MessageAcknowledgement | None:
        """Send ``message`` to handler ``name`` on ``node_id``.

        With a guarantee (``AT_LEAST_ONCE`` by default, ``EXACTLY_ONCE``,
        ``ORDERED``) returns a :class:`~zcluster.MessageAcknowledgement`, which
        ends DELIVERED, FAILED or EXPIRED (no ack within ``ttl`` seconds,
        default ``message_ttl_s``); ``callback(ack)`` runs when it does. A
        guaranteed send to a member that is down is kept, and delivered if it
        comes back in time. With ``AT_MOST_ONCE`` it returns None, and the
        target must be live. When ``outbox_max_count`` messages
        to ``node_id`` are unresolved, waits for room up to ``timeout``
        (default ``send_block_timeout_s``; 0 = not at all), then raises
        Backpressure.
        """
        guarantee, payload, ttl_s = self._prepared_send(node_id, message, guarantee, ttl)
        if not guarantee.is_reliable:
            self._require().feed(ev.SendRequested(node_id, name, payload))
            await self._yield_now_and_then()
            return None
        await self.gate.atake(node_id, self._block_timeout(timeout))
        ack, event = self._guaranteed(node_id, name, payload, guarantee, ttl_s, callback)
        self._require().feed(event)
        await self._yield_now_and_then()
        return ack

    def _prepared_send(
        self, node_id: str, message: Any, guarantee: DeliveryGuarantee, ttl: float | None
    ) -> tuple[DeliveryGuarantee, bytes, float]:
        """Check a send's arguments and serialize it: (guarantee, payload, ttl in seconds).

        Safe from any thread: it reads one immutable member record.
        """
        guarantee = _checked_guarantee(guarantee)
        self._require_target(node_id, guarantee)
        payload = self.encode(message)
        return guarantee, payload, self._checked_ttl(ttl, guarantee)

    def _checked_ttl(self, ttl: float | None, guarantee: DeliveryGuarantee) -> float:
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

    def _block_timeout(self, timeout: float | None) -> float:
        limit = self.config.send_block_timeout_s if timeout is None else timeout
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return float(limit)

    def _guaranteed(
        self,
        node_id: str,
        name: str,
        payload: bytes,
        guarantee: DeliveryGuarantee,
        ttl_s: float,
        callback: AckCallback | None,
    ) -> tuple[MessageAcknowledgement, ev.SendRequested]:
        """Register the acknowledgement of a send that holds a place in the gate.

        Raises NotRunning (giving the place back) once the node is stopping.
        """
        number = next(self._message_numbers)
        message_id = MessageId(self.node_id, self.incarnation, number)
        ack = MessageAcknowledgement(message_id, node_id, guarantee, self._dispatch)
        with self._acks_lock:
            if not self._accepting_sends:
                self.gate.release(node_id)
                raise NotRunning(f"node {self.node_id} is not running")
            self._acks[number] = ack
        if callback is not None:
            ack.add_done_callback(callback)
        return ack, ev.SendRequested(node_id, name, payload, guarantee, number, ttl_s)

    def _dispatch(self, fn: Callable[[], Any]) -> None:
        """Run a user callback where this node runs them (called on the node's loop)."""
        if self._runner is not None:
            self._runner.run(fn, None)

    def _resolve(
        self, number: int, status: AckStatus, reason: str
    ) -> MessageAcknowledgement | None:
        """Give one acknowledgement its final status; the caller releases its gate place."""
        ack = self._acks.pop(number, None)
        if ack is not None:
            ack._resolve(status, reason)
        return ack

    async def request(
        self, node_id: str, name: str, message: Any, timeout: float | None = None
    ) -> Any:
        """Call handler ``name`` on ``node_id`` and return its reply.

        Raises RequestTimeout, RemoteError (the handler raised or does not
        exist) or UnknownMember.
        """
        driver = self._require()
        self._require_live(node_id)
        payload = self.encode(message)
        limit = self.config.request_timeout_s if timeout is None else timeout
        request_id = next(self._request_ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        driver.feed(ev.RequestStarted(request_id, node_id, name, payload, limit))
        try:
            reply = await future
        finally:
            self._requests.pop(request_id, None)
        return self.serializer.deserialize(reply)

    async def publish(
        self,
        topic: str,
        message: Any,
        *,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE,
    ) -> None:
        """Publish ``message`` on ``topic`` to every subscribed member.

        ``AT_MOST_ONCE`` (the default) is fire and forget. ``AT_LEAST_ONCE``,
        ``EXACTLY_ONCE`` and ``ORDERED`` number the publication, so that
        subscribers fetch what they miss from this node's retransmit buffer and
        report (``on_publication_loss``) what it no longer holds.
        """
        event = self._publication(topic, message, guarantee)
        self._require().feed(event)
        await self._yield_now_and_then()

    def _publication(
        self, topic: str, message: Any, guarantee: DeliveryGuarantee
    ) -> ev.PublishRequested:
        _validate_topic(topic)
        guarantee = _checked_guarantee(guarantee)
        if guarantee.is_reliable and not self._require().core.publications.can_take(topic):
            raise ConfigError(
                f"at most {self.config.published_topics_max_count} topics can be published "
                "with a guarantee (published_topics_max_count)"
            )
        return ev.PublishRequested(topic, self.encode(message), guarantee)

    async def _yield_now_and_then(self) -> None:
        # A tight `await publish()` loop never suspends otherwise, and heartbeats would stop.
        self._calls_since_yield += 1
        if self._calls_since_yield >= YIELD_EVERY_CALLS:
            self._calls_since_yield = 0
            await asyncio.sleep(0)

    def encode(self, message: Any) -> bytes:
        """Serialize a message, refusing one larger than peers accept (max_message_bytes)."""
        payload = self.serializer.serialize(message)
        if len(payload) > self.config.max_message_bytes:
            raise SerializationError(
                f"message of {len(payload)} bytes exceeds max_message_bytes "
                f"({self.config.max_message_bytes})"
            )
        return payload

    def _require(self) -> Driver:
        if self._driver is None:
            raise NotRunning(f"node {self.node_id} is not running")
        return self._driver

    def _require_live(self, node_id: str) -> None:
        member = self._require().core.member(node_id)
        if member is None or not member.status.is_live:
            state = "unknown" if member is None else str(member.status)
            raise UnknownMember(f"{node_id!r} is not a live member ({state})")

    def _require_target(self, node_id: str, guarantee: DeliveryGuarantee) -> None:
        """At most once needs a live member; a guarantee waits out a down one."""
        if not guarantee.is_reliable:
            self._require_live(node_id)
        elif not self._require().core.accepts_guaranteed_send(node_id):
            member = self._require().core.member(node_id)
            state = "unknown" if member is None else str(member.status)
            raise UnknownMember(f"{node_id!r} is not a member that can receive ({state})")

    def _describe_view(self, _message: Any, _sender: str) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "digest": self.view_digest(),
            "members": [m.as_dict() for m in self.members()],
        }

    def _count_error(self) -> None:
        if self._driver is not None:
            self._driver.counters["callback_errors"] += 1

    # ------------------------------------------------------------ Application (driver calls)

    def deliver(self, effect: fx.Deliver) -> None:
        assert self._runner is not None
        handler = self._handlers.get(effect.name)
        if handler is None:
            self._require().counters["messages_unhandled"] += 1
            text = f"no handler named {effect.name!r} on node {self.node_id}"
            if effect.request_id is not None and effect.reply_address is not None:
                self._reply(effect, False, text.encode())
            elif effect.receipt is not None:
                self._finished(effect, text)
            return
        deserialize = self.serializer.deserialize

        def call() -> Any:
            return handler(deserialize(effect.payload), effect.sender)

        if effect.request_id is not None:
            self._runner.run(call, lambda result, exc: self._handled(effect, result, exc))
        elif effect.receipt is not None:
            self._handling += 1
            self._runner.run(call, lambda _, exc: self._handler_returned(effect, exc))
        else:
            self._runner.run(call, None)

    def _handler_returned(self, effect: fx.Deliver, exc: BaseException | None) -> None:
        self._handling -= 1
        self._finished(effect, _describe_error(exc))

    def _finished(self, effect: fx.Deliver, error: str | None) -> None:
        assert effect.receipt is not None
        if self._driver is not None:
            self._driver.feed(ev.DeliveryFinished(effect.sender, effect.receipt, error))

    def _handled(self, effect: fx.Deliver, result: Any, exc: BaseException | None) -> None:
        if self._driver is None:
            return
        if exc is not None:
            self._reply(effect, False, f"{type(exc).__name__}: {exc}".encode())
            return
        try:
            payload = self.encode(result)
        except ZclusterError as error:
            self._reply(effect, False, f"reply not serializable: {error}".encode())
            return
        self._reply(effect, True, payload)

    def _reply(self, effect: fx.Deliver, ok: bool, payload: bytes) -> None:
        assert effect.request_id is not None and effect.reply_address is not None
        self._require().feed(ev.ReplyReady(effect.request_id, effect.reply_address, ok, payload))

    def deliver_publication(self, effect: fx.DeliverPublication) -> None:
        callbacks = self._subscriptions.get(effect.topic)
        if not callbacks or self._runner is None:
            return
        message = _Lazy(self.serializer.deserialize, effect.payload)
        for callback in tuple(callbacks):
            self._runner.run(functools.partial(_notify, callback, effect, message), None)

    def acknowledged(self, effect: fx.Acknowledged) -> None:
        settled = 0
        try:
            for number, status, reason in effect.outcomes:
                settled += self._resolve(number, status, reason) is not None
        finally:
            if settled:
                self.gate.release(effect.receiver, settled)  # one wake-up for the batch

    def publications_lost(self, effect: fx.PublicationsLost) -> None:
        loss = PublicationLoss(effect.publisher, effect.topic, effect.first, effect.last)
        log.warning(
            "%s: lost publications %d..%d of %s on %r for good",
            self.node_id,
            loss.first,
            loss.last,
            loss.publisher,
            loss.topic,
        )
        for callback in self._loss_callbacks:
            self._dispatch(functools.partial(callback, loss))

    def complete_request(self, effect: fx.CompleteRequest) -> None:
        future = self._requests.get(effect.request_id)
        if future is None or future.done():
            return
        if effect.ok:
            future.set_result(effect.payload)
        elif effect.timed_out:
            future.set_exception(RequestTimeout(f"no reply to request {effect.request_id}"))
        else:
            future.set_exception(RemoteError(effect.error))

    def member_changed(self, effect: fx.MemberChanged) -> None:
        member, previous = effect.member, effect.previous
        was = "new" if previous is None else str(previous.status)
        if previous is not None and previous.incarnation != member.incarnation:
            was = f"{was} (restarted)"
        log.info("%s: member %s %s -> %s", self.node_id, member.node_id, was, member.status)
        if member.node_id == self.node_id:
            if member.status is MemberStatus.UP and self._joined is not None:
                self._joined.set()
            if member.status is MemberStatus.LEFT and self._left is not None:
                self._left.set()
        for callback in self._member_callbacks:
            if self._runner is not None:
                self._runner.run(functools.partial(callback, member, previous), None)


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


def _notify(callback: SubscriptionCallback, effect: fx.DeliverPublication, message: _Lazy) -> Any:
    return callback(effect.topic, message.get(), effect.sender)
