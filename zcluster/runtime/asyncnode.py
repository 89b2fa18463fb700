"""AsyncNode: the asyncio API of a cluster node."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zcluster.address import WILDCARD_HOSTS, format_address, parse_address
from zcluster.application import (
    AckCallback,
    Application,
    Handler,
    LossCallback,
    MemberCallback,
    MessageIgnored,
    SubscriptionCallback,
    ValidatedHandler,
    checked_guarantee,
    reply_payload,
)
from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.core.persistence import RestoredState
from zcluster.delivery import DrainReport, MessageAcknowledgement, TransactionResult
from zcluster.errors import (
    ConfigError,
    NotRunning,
    UnknownMember,
    WireError,
    ZclusterError,
)
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus, Tags, checked_tags
from zcluster.runtime.driver import Driver
from zcluster.runtime.gate import OutboxGate
from zcluster.runtime.inbound import InboundConnections
from zcluster.runtime.runners import InlineRunner, OnError, ReadControl, Runner
from zcluster.runtime.secured import SecuredConnections
from zcluster.runtime.seedcheck import Secure, diagnose_seeds
from zcluster.runtime.store import SYNC_POLICIES, StateStore
from zcluster.runtime.submitter import Submitter
from zcluster.runtime.transport import Transport
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.security.policy import DIRECT_DOMAIN, KEY_TAG, PUBSUB_DOMAIN, AuthenticationHandler
from zcluster.serialization import MsgpackSerializer, Serializer
from zcluster.wire import check_name, check_user_topic

log = logging.getLogger("zcluster.node")

#: where a node runs user callbacks: (its loop, control of its reading, count an error)
RunnerFactory = Callable[[asyncio.AbstractEventLoop, ReadControl, OnError], Runner]

#: fault injection: the delays after which a received message is handled, () to drop it
InboundFaults = Callable[[ev.EnvelopeReceived], tuple[float, ...]]

#: built-in handler answering with this node's membership view (tests, tools)
VIEW_HANDLER = "zcluster.view"
#: publish() and send() return to the event loop this often, so heartbeats keep flowing
YIELD_EVERY_CALLS = 64


#: what to check when no seed answers (a PUB port, another program's port, or nothing)
NOT_ADMITTED_HINT = (
    "check that each seed is the address (ROUTER port) a running zcluster node was bound "
    "to, reachable from here; its PUB port (the next one) or another program's port "
    "never answers"
)


class JoinTimeout(ZclusterError, TimeoutError):
    """The node did not join through its seeds in time."""


class JoinRefused(ZclusterError):
    """A seed refused to admit the node, e.g. because a live member has its node id."""


def _is_loopback(bind: str) -> bool:
    host, _ = parse_address(bind, allow_port_zero=True, allow_wildcard=True)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: "localhost" is the loopback one
        return host == "localhost"


def new_incarnation() -> int:
    """Start time in milliseconds above 20 random bits: unique and larger after a restart."""
    return (time.time_ns() // 1_000_000) << 20 | random.SystemRandom().getrandbits(20)


def _checked(check: Callable[..., str], value: str, *what: str) -> str:
    """Run a wire-level check, reporting a bad argument as ConfigError."""
    try:
        return check(value, *what)
    except WireError as exc:
        raise ConfigError(str(exc)) from None


def validate_topic(topic: str) -> str:
    """A topic argument as the wire takes it, or ConfigError."""
    return _checked(check_user_topic, topic)


class AsyncNode:
    """A cluster node for asyncio programs (``async with AsyncNode(...) as node``).

    ``callbacks`` says where user callbacks (handlers, subscribers, member and
    loss callbacks) run: by default inline on the event loop, where coroutine
    callbacks become tasks; the blocking :class:`~zcluster.Node` runs them on a
    callback thread.
    """

    def __init__(
        self,
        node_id: str,
        bind: str = "127.0.0.1:0",
        seeds: Iterable[str] = (),
        advertise: str | None = None,
        *,
        serializer: Serializer | None = None,
        config: NodeConfig | None = None,
        callbacks: RunnerFactory | None = None,
        tags: Mapping[str, str] | None = None,
        security: SecurityConfig | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        state_sync: str = "normal",
        **options: Any,
    ) -> None:
        self.node_id = _checked(check_name, node_id, "node id")
        if state_sync not in SYNC_POLICIES:
            raise ConfigError(
                f"state_sync must be one of {', '.join(SYNC_POLICIES)}, not {state_sync!r}"
            )
        #: where guaranteed sends, the exactly-once window and transaction decisions
        #: survive a crash (None: in memory only; docs/delivery.md, "Durability")
        self.state_dir = state_dir
        self.state_sync = state_sync
        #: acknowledgements of the sends an earlier life left unsettled, sent again by
        #: this run (``state_dir``)
        self.restored_sends: list[MessageAcknowledgement] = []
        #: how this node secures its connections (docs/security.md)
        self.security = security or SecurityConfig()
        #: what the security settings' files hold (read again to rotate keys)
        self._credentials = self.security.load()
        try:
            #: what this node says about itself, gossiped with its record (``role=worker``)
            self.tags: Tags = checked_tags(tags)
        except ValueError as exc:
            raise ConfigError(f"tags: {exc}") from None
        parse_address(bind, allow_port_zero=True, allow_wildcard=True)
        if isinstance(seeds, str | bytes):
            raise ConfigError(
                f"seeds must be a list of HOST:PORT addresses, e.g. seeds=[{seeds!r}], "
                "not one string"
            )
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
        self._handlers: dict[str, Handler] = {VIEW_HANDLER: MessageIgnored(self._describe_view)}
        #: the application layer: handlers, subscribers, acknowledgements, callbacks
        self.app = Application(
            self.node_id,
            self.config,
            self.serializer,
            self._handlers.get,
            OutboxGate(self.config.outbox_max_count),
        )
        self.app.on_my_change = self._my_change
        self.app.on_join_refused = self._join_refused
        #: why a seed refused to admit this run of the node (None: no refusal)
        self._refusal: str | None = None
        #: what connecting to each seed showed, while no seed admits us ("" before a look)
        self._seed_report = ""
        self._join_watch: asyncio.Task[None] | None = None
        self._callbacks = callbacks or self._inline_runner
        self._request_ids = itertools.count(random.SystemRandom().getrandbits(32))
        self._driver: Driver | None = None
        self._submitter: Submitter | None = None
        self._inbound_faults: InboundFaults | None = None
        self._joined: asyncio.Event | None = None
        self._left: asyncio.Event | None = None
        self.incarnation = 0
        self._calls_since_yield = 0

    @property
    def inbound_faults(self) -> InboundFaults | None:
        """Fault injection for ``zcluster.testing``: the delays after which each received
        message is handled, () to drop it. Set before ``start()`` to apply from the
        first message; setting it on a running node applies from then on."""
        return self._inbound_faults

    @inbound_faults.setter
    def inbound_faults(self, fate: InboundFaults | None) -> None:
        self._inbound_faults = fate
        if self._driver is not None:
            self._driver.inbound_faults = fate

    @property
    def gate(self) -> OutboxGate:
        """Places for unresolved guaranteed sends, per receiver (backpressure)."""
        return self.app.gate

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
        store = self._open_store()  # first: a bad state_dir stops the node before it binds
        self.incarnation = new_incarnation()
        state = None
        try:
            if store is not None:  # later than every earlier life's, whatever the clock says
                state = store.load()
                self.incarnation = max(self.incarnation, store.previous_incarnation + 1)
                store.begin(self.incarnation)
            await self._start(loop, store, state)
        except BaseException:
            if store is not None and self._driver is None:
                store.close()
            raise
        if not wait:
            return
        try:
            await self.wait_joined(timeout)
        except BaseException:  # JoinTimeout, or the caller gave up (cancelled)
            await self.stop()
            raise

    def _open_store(self) -> StateStore | None:
        if self.state_dir is None:
            return None
        return StateStore.open(
            self.state_dir,
            self.node_id,
            sync=self.state_sync,
            window_max_count=self.config.dedup_window_max_count,
            window_s=self.config.dedup_retention_s,
            memory_s=self.config.transaction_memory_s,
        )

    async def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        store: StateStore | None,
        state: RestoredState | None,
    ) -> None:
        secured = self._secured()
        tags = self._own_tags(secured)  # before binding: may fail (too many tags)
        transport = Transport(self.config, self.node_id, secured)
        inbound: InboundConnections | None = None
        try:
            # before binding: a handshake needs its handler
            inbound = InboundConnections(
                transport.context,
                {DIRECT_DOMAIN: transport.router, PUBSUB_DOMAIN: transport.pub},
                self.config,
                loop,
                secured.policy if secured is not None else None,
            )
            if secured is not None:
                secured.use_zap(inbound.zap)
            router_port, pub_port = transport.bind(self.bind)
            address, pub_address = self._advertised(router_port, pub_port)
            if secured is not None:  # where tokens made for this node say it is
                secured.policy.addresses = {address, *self._bound_addresses(router_port)}
            core = NodeCore(
                self.node_id,
                self.incarnation,
                address,
                pub_address,
                seeds=self.seeds,
                config=self.config,
                rng=random.Random(int.from_bytes(os.urandom(8), "big")),
                tags=tags,
                durable=store is not None,
            )
            restored = core.restore(state, time.monotonic()) if state is not None else []
            driver = Driver(core, transport, self.app, loop, inbound, security=secured, store=store)
        except BaseException:
            if inbound is not None:
                inbound.close()
            transport.close()
            raise
        self._joined, self._left = asyncio.Event(), asyncio.Event()
        self._refusal = None
        self._seed_report = ""
        self._driver = driver
        if secured is not None:
            secured.on_revocation(driver.cut_subscribers, driver.reconnect)
            secured.use_encoder(driver.encoder)
        driver.inbound_faults = self.inbound_faults
        counters = core.counters
        runner = self._callbacks(loop, driver, self.app.callback_failed)
        self.app.attach(
            self.incarnation, runner, driver.feed, counters, driver.send_reply, driver.feed_soon
        )
        self.restored_sends = self.app.restored(restored)
        if restored:
            log.info("node %s: %d unsettled sends restored", self.node_id, len(restored))
        self._submitter = Submitter(loop, driver, self.config.submit_queue_max_count)
        driver.start()
        driver.feed_many(self.app.subscription_events())
        log.info("node %s listening on %s (pub %s)", self.node_id, address, pub_address)
        if secured is None and not _is_loopback(self.bind):
            log.warning(
                "node %s listens on %s with security mode none: anyone who can reach it "
                "can join, read every publication and speak as any node (see "
                "docs/security.md: --security curve-mutual, jwt or curve+jwt)",
                self.node_id,
                self.bind,
            )
        if self.seeds:
            self._join_watch = loop.create_task(self._warn_until_joined(self._joined))

    async def wait_joined(self, timeout: float | None = None) -> None:
        """Wait until this node is up in the cluster; JoinTimeout after ``timeout``,
        JoinRefused as soon as a seed refuses it (its node id is a live member's)."""
        driver = self._require()
        if driver.core.me.status is MemberStatus.UP or self._joined is None:
            return
        limit = self.config.join_timeout_s if timeout is None else timeout
        try:
            await asyncio.wait_for(self._joined.wait(), limit)
            if self._refusal is not None:  # woken by the refusal, not by joining
                raise JoinRefused(f"node {self.node_id} cannot join: {self._refusal}")
        except TimeoutError:
            if not self._seed_report:
                self._seed_report = await asyncio.to_thread(
                    diagnose_seeds,
                    self.seeds,
                    self.config.seed_check_timeout_s,
                    self._seed_check_credentials(),
                )
            why = f"no seed admitted it ({self._seed_report or NOT_ADMITTED_HINT})"
            if driver.counters["node_id_conflicts"]:
                why = "another running process uses this node id"
            raise JoinTimeout(
                f"node {self.node_id} could not join through seeds {', '.join(self.seeds)} "
                f"within {limit:g}s: {why}"
            ) from None

    async def stop(self) -> DrainReport:
        """Leave the cluster gracefully, having delivered what was accepted, and close
        every socket. Returns what was delivered and what could not be.

        New messages are refused from the start. Then the node waits, up to
        ``drain_timeout_s``, until every subscriber confirms it holds every
        publication (fetching what it missed meanwhile) and every guaranteed
        send is acknowledged; and, up to ``leave_timeout_s``, until handlers of
        guaranteed messages still running finish, so their senders learn they
        were delivered. What is left undone is logged and reported.
        """
        driver = self._driver
        if driver is None:
            return DrainReport()  # not running: nothing to deliver
        # A node still joining has nothing to leave, nor anything to deliver.
        left = self._left is None or driver.core.me.status is MemberStatus.JOINING
        try:
            if not left and self._left is not None:
                driver.lane.stop_taking()
                driver.feed(ev.LeaveRequested())
                await asyncio.wait_for(self._left.wait(), self.config.graceful_stop_max_s)
                left = True
        except TimeoutError:
            log.warning("node %s: leave not confirmed in time; closing", self.node_id)
        finally:
            self._shut(driver)
        report = self._report(driver, left)
        if not report.complete:
            log.warning("node %s stopped: %s", self.node_id, report)
        return report

    def _report(self, driver: Driver, left: bool) -> DrainReport:
        drained = self.app.drained
        dropped = driver.lane.dropped_unnumbered  # numbered ones: repaired, or unconfirmed
        if drained is None:
            return DrainReport(publications_dropped=dropped, left=left)
        return DrainReport(
            drained.subscribers_confirmed,
            drained.subscribers_unconfirmed,
            {node_id: dict(positions) for node_id, positions in drained.at_stake},
            drained.sends_unacknowledged,
            drained.handlers_unfinished,
            dropped,
            drained.waited_s,
            left,
        )

    async def abort(self) -> None:
        """Stop at once without leaving, as a crash would: peers must detect the failure.

        Meant for tests (``zcluster.testing`` crashes nodes with it).
        """
        driver = self._driver
        if driver is not None:
            driver.transport.abandon()
            self._shut(driver)

    def _secured(self) -> SecuredConnections | None:
        """The security policy for a run of this node (None in mode none)."""
        if self._credentials.mode is SecurityMode.NONE:
            return None
        policy = AuthenticationHandler(
            self.node_id,
            self._credentials,
            self.config,
            cluster=self.security.cluster,
            authorized_nodes=self.security.authorized_nodes,
            members=self._member_record,
        )
        return SecuredConnections(policy, self.config, self.security)

    def _member_record(self, node_id: str) -> tuple[str | None, bool] | None:
        """The key a member's record announces, and whether it is live (read for every
        message on a ``curve`` node's ROUTER)."""
        driver = self._driver
        member = driver.core.member(node_id) if driver is not None else None
        if member is None:
            return None
        key = next((value for name, value in member.tags if name == KEY_TAG), None)
        return key, member.status.is_live

    def _own_tags(self, secured: SecuredConnections | None) -> Tags:
        """Our tags, with what the security mode says of us (our public key)."""
        if secured is None:
            return self.tags
        try:
            return checked_tags({**dict(self.tags), **secured.policy.my_tags()})
        except ValueError as exc:
            raise ConfigError(f"tags: {exc} (the security mode adds its own)") from None

    async def _warn_until_joined(self, joined: asyncio.Event) -> None:
        """Say, every ``join_warning_interval_s``, that no seed has admitted us yet, and
        what connecting to each seed shows (seedcheck.py)."""
        interval = self.config.join_warning_interval_s
        waited = 0.0
        while not joined.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(joined.wait(), interval)
            waited += interval
            if joined.is_set():
                return
            driver = self._driver
            if driver is not None and driver.security is not None:
                with driver.core_lock:  # a seed may have authorized us since
                    driver.transport.forget_strangers()
            self._seed_report = await asyncio.to_thread(
                diagnose_seeds,
                self.seeds,
                self.config.seed_check_timeout_s,
                self._seed_check_credentials(),
            )
            if not joined.is_set():
                log.warning(
                    "node %s: not admitted after %gs; %s",
                    self.node_id,
                    waited,
                    self._seed_report,
                )

    def _seed_check_credentials(self) -> Secure | None:
        """How the seed check connects: with this node's credentials when secured."""
        driver = self._driver
        if driver is None or driver.security is None:
            return None
        return driver.transport.secure_client

    def _shut(self, driver: Driver) -> None:
        """Close everything, whatever happened during the leave."""
        if self._join_watch is not None:
            self._join_watch.cancel()
            self._join_watch = None
        self._driver = None
        self._submitter = None
        driver.close()  # first: no send leaves after its acknowledgement failed (detach)
        self.app.detach()
        log.info("node %s stopped", self.node_id)

    def _bound_addresses(self, router_port: int) -> set[str]:
        """The ROUTER's address as bound, if it names one host (a peer may use it)."""
        host, _ = parse_address(self.bind, allow_port_zero=True, allow_wildcard=True)
        return set() if host in WILDCARD_HOSTS else {format_address(host, router_port)}

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

    def members(self, tags: Mapping[str, str] | None = None) -> list[Member]:
        """Every known member with its state, this node included; with ``tags``, only
        those that carry every one of them (``members({"role": "worker"})``)."""
        members = self._require().core.members()
        return members if not tags else [m for m in members if m.has_tags(tags)]

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

    def reload_security(self) -> bool:
        """Read the security settings' files again and decide with them from now on
        (what ``zcluster node`` does on SIGHUP; a running node also does it by itself
        within two ``auth_reload_interval_s`` of a change). A key, CA or node no longer
        authorized is refused from its next message, and cut from this node's PUB.
        False if a file is bad: the old settings stay (counted ``auth_reload_failed``).
        This node's own key pair is read at start only."""
        driver = self._require()
        if driver.security is None:
            return False
        with driver.core_lock:  # a reload opens and closes connections
            return driver.security.reload()

    def stats(self) -> dict[str, int]:
        """Counters (messages, rejected frames, probes, suspicions, ...) and connection gauges."""
        driver = self._driver
        if driver is None:
            return {}
        with driver.core_lock:  # a caller's thread may open a DEALER meanwhile
            gauges = driver.transport.gauges()
            gauges.update(driver.inbound.gauges())
        stats = {**driver.counters, **gauges, **driver.inbound.counters}
        if driver.security is not None:
            stats.update(driver.security.policy.counters)
        stats["messages_published"] = stats.get("messages_published", 0) + driver.lane.published
        stats["publications_dropped_queue_full"] = driver.lane.dropped
        stats["control_skipped_queue_full"] = driver.lane.skipped
        return stats

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

    def register(self, name: str, handler: Handler, *, validate: Handler | None = None) -> None:
        """Handle direct messages named ``name`` with ``handler(message, sender)``.

        The handler's return value is the reply to a request. ``validate(message,
        coordinator)`` votes on each transaction sent to ``name``
        (``send_transaction``): returning False or raising vetoes it, the exception's
        text being the reason; without it, every transaction is taken. ConfigError
        if ``name`` has a handler already (``unregister`` it first).
        """
        name = _checked(check_name, name, "handler name")
        if name in self._handlers:
            raise ConfigError(
                f"a handler named {name!r} is registered already; unregister({name!r}) first"
            )
        self._handlers[name] = handler if validate is None else ValidatedHandler(handler, validate)

    def unregister(self, name: str) -> None:
        """Stop handling messages named ``name`` (their senders then get "no handler")."""
        if self._handlers.pop(name, None) is None:
            raise ConfigError(f"no handler named {name!r} is registered")

    def on_member_change(self, callback: MemberCallback) -> None:
        """Call ``callback(member, previous)`` whenever a member's record changes."""
        self.app.member_callbacks.append(callback)

    def on_publication_loss(self, callback: LossCallback) -> None:
        """Call ``callback(loss)`` when guaranteed publications are lost for good.

        ``loss`` is a :class:`~zcluster.PublicationLoss` with the exact range;
        the ``publications_lost`` counter in ``stats()`` counts them too.
        """
        self.app.loss_callbacks.append(callback)

    async def subscribe(
        self, topic: str, callback: SubscriptionCallback, *, replay: bool = False
    ) -> None:
        """Receive publications on ``topic`` (exact match): ``callback(topic, message, sender)``.

        Guaranteed publications start at each publisher's current position;
        with ``replay`` they start from the oldest one its buffer still holds.
        """
        self._tell_core(self.app.subscribe(validate_topic(topic), callback, replay))

    async def unsubscribe(self, topic: str) -> None:
        self._tell_core(self.app.unsubscribe(topic))

    async def subscribe_prefix(self, prefix: str, callback: SubscriptionCallback) -> None:
        """Receive publications on every topic that starts with ``prefix`` (``"prices."``:
        ``prices.eur``, ``prices.usd``, ...): ``callback(topic, message, sender)``.

        ZeroMQ filters them at the subscriber by prefix. Numbered publications are
        repaired per topic, as for ``subscribe``; each topic's stream starts where it
        is first seen (there is no per-topic answer from the publisher to replay from).
        """
        self._tell_core(self.app.subscribe_prefix(validate_topic(prefix), callback))

    async def unsubscribe_prefix(self, prefix: str) -> None:
        self._tell_core(self.app.unsubscribe_prefix(prefix))

    def _tell_core(self, event: ev.Event | None) -> None:
        if event is not None and self._driver is not None:
            self._driver.feed(event)

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
        guarantee, payload, ttl_s = self.prepare_send(node_id, message, guarantee, ttl)
        if not guarantee.is_reliable:
            self._require().feed(ev.SendRequested(node_id, name, payload))
            await self._yield_now_and_then()
            return None
        await self.gate.atake(node_id, self.app.block_timeout(timeout))
        ack, event = self.app.register_send(node_id, name, payload, guarantee, ttl_s, callback)
        self._require().feed(event)
        await self._yield_now_and_then()
        return ack

    def prepare_send(
        self, node_id: str, message: Any, guarantee: DeliveryGuarantee, ttl: float | None
    ) -> tuple[DeliveryGuarantee, bytes, float]:
        """Check a send's arguments and serialize it: (guarantee, payload, ttl in seconds).

        Safe from any thread: it reads one immutable member record.
        """
        guarantee = checked_guarantee(guarantee)
        self._require_target(node_id, guarantee)
        payload = self.app.encode(message)
        return guarantee, payload, self.app.checked_ttl(ttl, guarantee)

    async def request(
        self, node_id: str, name: str, message: Any, timeout: float | None = None
    ) -> Any:
        """Call handler ``name`` on ``node_id`` and return its reply.

        Raises RequestTimeout, RemoteError (the handler raised or does not
        exist) or UnknownMember.
        """
        driver = self._require()
        event = self.prepare_request(node_id, name, message, timeout)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.app.expect_reply(event.request_id, functools.partial(_settle, future))
        driver.feed(event)
        try:
            reply = await future
        finally:
            self.app.drop_request(event.request_id)
        return self.serializer.deserialize(reply)

    async def send_transaction(
        self,
        node_ids: Iterable[str],
        name: str,
        message: Any,
        *,
        timeout: float | None = None,
    ) -> TransactionResult:
        """Deliver ``message`` to handler ``name`` of every node in ``node_ids``, or of
        none (two-phase commit, this node coordinating; docs/delivery.md).

        Each target's validation hook (``register(..., validate=)``) votes; with every
        vote yes within ``timeout`` seconds (default ``transaction_timeout_s``) the
        transaction commits and each target's handler runs once, else it aborts and
        none does. Returns the :class:`~zcluster.TransactionResult`: committed or
        aborted, and why (which target vetoed, which did not vote in time).
        """
        return await self.run_transaction(
            self.prepare_transaction(node_ids, name, message, timeout)
        )

    async def run_transaction(self, event: ev.TransactionStarted) -> TransactionResult:
        """Coordinate a prepared transaction (``prepare_transaction``) to its result."""
        driver = self._require()
        future: asyncio.Future[TransactionResult] = asyncio.get_running_loop().create_future()
        self.app.expect_transaction(event.number, functools.partial(_settle_transaction, future))
        driver.feed(event)
        return await future

    def prepare_transaction(
        self, node_ids: Iterable[str], name: str, message: Any, timeout: float | None
    ) -> ev.TransactionStarted:
        """Check a transaction's arguments and serialize it. Safe from any thread."""
        if isinstance(node_ids, str):
            raise ConfigError("node_ids is a list of node ids, not one string")
        targets = tuple(_checked(check_name, t, "node id") for t in node_ids)
        name = _checked(check_name, name, "handler name")
        limit = self.config.transaction_timeout_s if timeout is None else timeout
        if not 0 < limit <= self.config.transaction_timeout_max_s:
            raise ConfigError(
                f"timeout must be positive and at most transaction_timeout_max_s "
                f"({self.config.transaction_timeout_max_s:g} s)"
            )
        payload = self.app.encode(message)
        return ev.TransactionStarted(self.app.next_number(), targets, name, payload, limit)

    def prepare_request(
        self, node_id: str, name: str, message: Any, timeout: float | None
    ) -> ev.RequestStarted:
        """Check a request's arguments and serialize it. Safe from any thread."""
        self._require_live(node_id)
        payload = self.app.encode(message)
        limit = self.config.request_timeout_s if timeout is None else timeout
        return ev.RequestStarted(next(self._request_ids), node_id, name, payload, limit)

    async def publish(
        self,
        topic: str,
        message: Any,
        *,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE,
    ) -> None:
        """Publish ``message`` on ``topic`` to every subscribed member.

        ``AT_MOST_ONCE`` (the default) is fire and forget. ``AT_LEAST_ONCE``,
        ``EXACTLY_ONCE``, ``ORDERED`` and ``CAUSAL`` number the publication, so that
        subscribers fetch what they miss from this node's retransmit buffer and
        report (``on_publication_loss``) what it no longer holds. A ``CAUSAL`` one
        is given to each subscriber after every CAUSAL message it was also given
        that happened before it (docs/delivery.md).

        While a subscriber's queue is full (``pubsub_hwm_count``) this waits for
        room, up to ``publish_block_max_s``: the publisher goes at the pace of
        its slowest subscriber rather than lose publications (docs/delivery.md).
        """
        driver = self._require()
        lane = driver.lane
        if guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            waiting = lane.try_unnumbered(topic, message)
        elif guarantee is DeliveryGuarantee.CAUSAL:
            waiting = driver.publish_causal(topic, self.app.encode(message))
        else:
            waiting = lane.try_numbered(topic, message, guarantee)
        if waiting is None:
            await self._yield_now_and_then()
            return
        # A subscriber's queue is full: wait for room without holding up the loop.
        for pause in lane.room_pauses():
            await asyncio.sleep(pause)
            if lane.offer(waiting):
                return
        lane.force(waiting)

    def publish_at_most_once(self, topic: str, message: Any) -> None:
        """Publish without a guarantee, at once, from any thread.

        Nothing is numbered or kept, so the publication needs neither the loop
        nor the core: it goes straight to the PUB socket (docs/architecture.md).
        """
        self.publisher()(topic, message)

    def publisher(self) -> Callable[[str, Any], None]:
        """``publish_at_most_once`` of this run of the node, to call without the lookups
        (it raises NotRunning once the node stops)."""
        return self._require().lane.publish_unnumbered

    def numbered_publisher(self) -> Callable[[str, Any, DeliveryGuarantee], None]:
        """Guaranteed publishing of this run of the node, in the caller's thread, for the
        blocking API (``lane.publish_numbered``; it raises NotRunning once the node stops).

        Not for the loop's own thread: the asyncio API publishes through the core.
        """
        driver = self._require()
        numbered, encode = driver.lane.publish_numbered, self.app.encode

        def publish(topic: str, message: Any, guarantee: DeliveryGuarantee) -> None:
            if guarantee is not DeliveryGuarantee.CAUSAL:
                numbered(topic, message, guarantee)
                return
            waiting = driver.publish_causal(topic, encode(message))
            if waiting is not None:
                driver.lane.wait_for_room(waiting)

        return publish

    def send_guaranteed(self, event: ev.SendRequested) -> bool:
        """Take a registered guaranteed send in the caller's thread (blocking API); False:
        ``submit`` it instead (the core refuses it, or the node is stopping)."""
        return self._require().send_guaranteed(event)

    def send_request(self, request: ev.RequestStarted) -> bool:
        """Send a prepared request from any thread; False: ``submit`` it instead."""
        return self._require().send_request(request)

    def submit(self, event: ev.Event, timeout: float | None) -> None:
        """Hand an event to the node's loop from another thread, batched with others.

        Blocks while ``submit_queue_max_count`` calls wait, up to ``timeout``
        seconds, then raises Backpressure.
        """
        if self._submitter is None:
            raise NotRunning.of(self.node_id)
        self._submitter.submit(event, timeout)

    async def _yield_now_and_then(self) -> None:
        # A tight `await publish()` loop never suspends otherwise, and heartbeats would stop.
        self._calls_since_yield += 1
        if self._calls_since_yield >= YIELD_EVERY_CALLS:
            self._calls_since_yield = 0
            await asyncio.sleep(0)

    def encode(self, message: Any) -> bytes:
        """Serialize a message, refusing one larger than peers accept (max_message_bytes)."""
        return self.app.encode(message)

    def _require(self) -> Driver:
        if self._driver is None:
            raise NotRunning.of(self.node_id)
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

    def _inline_runner(
        self, loop: asyncio.AbstractEventLoop, reading: ReadControl, on_error: OnError
    ) -> Runner:
        """Callbacks on the loop (the default), reading paused while too many coroutine
        callbacks are unfinished."""
        return InlineRunner(loop, on_error, self.config.callback_queue_max_count, reading)

    def _describe_view(self, _sender: str) -> dict[str, Any]:
        core = self._require().core
        return {
            "node_id": self.node_id,
            "digest": self.view_digest(),
            "members": [
                {**m.as_dict(), "capabilities": list(core.capabilities_of(m.node_id) or ())}
                for m in self.members()
            ],
        }

    def _join_refused(self, reason: str) -> None:
        log.error("node %s cannot join: %s", self.node_id, reason)
        self._refusal = reason
        if self._joined is not None:
            self._joined.set()  # wakes those waiting to join: they raise JoinRefused

    def _my_change(self, member: Member) -> None:
        if member.status is MemberStatus.UP and self._joined is not None:
            self._joined.set()
        if member.status is MemberStatus.LEFT and self._left is not None:
            self._left.set()


def _settle_transaction(
    future: asyncio.Future[TransactionResult], result: TransactionResult | None
) -> None:
    """End a transaction's future with its result (None: this node stopped first)."""
    if not future.done():
        if result is None:
            result = TransactionResult(False, "the coordinating node stopped before a decision")
        future.set_result(result)


def _settle(future: asyncio.Future[bytes], outcome: fx.CompleteRequest | None) -> None:
    """End a request's future with the core's outcome (None: the node stopped)."""
    if future.done():
        return
    try:
        future.set_result(reply_payload(outcome))
    except ZclusterError as exc:
        future.set_exception(exc)
