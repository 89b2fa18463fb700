"""A deterministic simulated network that runs unchanged NodeCores.

Time is virtual: a heap of timed deliveries and ticks, drained in order.
All randomness (latency jitter, loss, tick phases, each core's own choices)
comes from one seeded ``random.Random``, so a seed reproduces a whole run;
``trace_digest()`` hashes the observable history (every delivery, membership
change, crash and change of conditions, with its virtual time) to prove it.

Frames are really encoded and decoded (``zcluster.wire``), once per send,
so the simulation exercises the same bytes as real sockets. User code runs
through the same application layer as on real sockets
(``zcluster.application``): handler dispatch, replies, failure texts and
acknowledgements are the ones users get; handlers take
``handler_delay_s`` of virtual time to return.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zcluster.application import Application, ValidatedHandler
from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.errors import WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.guarantees import AckStatus, DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus, checked_tags
from zcluster.protocol.messages import Capabilities
from zcluster.runtime.gate import OutboxGate
from zcluster.runtime.runners import Call, Done
from zcluster.testing.disk import SimDisk
from zcluster.testing.faults import FaultModel, NetworkConditions
from zcluster.wire import Encoder, decode_direct, decode_published

#: virtual time a SUB takes to connect and subscribe (the slow-joiner window)
CONNECT_DELAY_S = 0.001
#: virtual time between two evaluations of a run_until predicate
PREDICATE_INTERVAL_S = 0.01

#: a handler gets (sender, payload); its return value is a request's reply
Handler = Callable[[str, bytes], bytes | None]
#: gate places are not limited in the simulation: the core's own outbox bound applies
_UNBOUNDED_COUNT = 2**62


class _RawBytes:
    """The simulation's serializer: payloads are bytes and stay bytes."""

    def serialize(self, value: Any) -> bytes:
        return b"" if value is None else bytes(value)

    def deserialize(self, data: bytes) -> bytes:
        return bytes(data)


@dataclasses.dataclass(slots=True)
class SimNode:
    """One simulated node: its core, its application layer, and what it observed."""

    core: NodeCore
    app: Application
    encoder: Encoder
    alive: bool = True
    #: PUB addresses whose traffic reaches this node's SUB, with the members behind each
    subscribed_to: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    #: user topics this node's SUB lets through (membership traffic always passes)
    filters: set[str] = dataclasses.field(default_factory=set)
    #: and prefixes of user topics it lets through
    prefix_filters: dict[str, None] = dataclasses.field(default_factory=dict)

    def lets_through(self, topic: str) -> bool:
        return topic in self.filters or any(topic.startswith(p) for p in self.prefix_filters)

    handlers: dict[str, Handler] = dataclasses.field(default_factory=dict)
    #: validation hooks of transactions, by handler name: ``validate(sender, payload)``
    validators: dict[str, Handler] = dataclasses.field(default_factory=dict)
    #: results of the transactions this node coordinated, by number
    transactions: dict[int, fx.TransactionDone] = dataclasses.field(default_factory=dict)
    delivered: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)
    completed: dict[int, fx.CompleteRequest] = dataclasses.field(default_factory=dict)
    #: final status of each guaranteed send, by message number
    acks: dict[int, tuple[AckStatus, str]] = dataclasses.field(default_factory=dict)
    #: publications reported lost for good
    losses: list[fx.PublicationsLost] = dataclasses.field(default_factory=list)
    turn_end_scheduled: bool = False
    #: its durable store, if it has one
    disk: SimDisk | None = None
    #: the application layer's effect handlers, by effect type
    appliers: dict[type, Callable[[Any], None]] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.appliers = self.app.appliers()

    @property
    def node_id(self) -> str:
        return self.core.node_id

    def view(self) -> dict[str, MemberStatus]:
        return {m.node_id: m.status for m in self.core.members()}

    # The query methods of zcluster.Node, so tests read the same on both backends.

    def members(self) -> list[Member]:
        return self.core.members()

    def member(self, node_id: str) -> Member | None:
        return self.core.member(node_id)

    def view_digest(self) -> str:
        return self.core.digest()

    def stats(self) -> dict[str, int]:
        return dict(self.core.counters)

    def handler(self, name: str) -> Callable[[Any, str], Any] | None:
        """The application layer's view of ``handlers``: ``handler(message, sender)``."""
        handler = self.handlers.get(name)
        if handler is None:
            return None
        validate = self.validators.get(name)
        call = _flipped(handler)
        return call if validate is None else ValidatedHandler(call, _flipped(validate))


def _flipped(handler: Handler) -> Callable[[Any, str], Any]:
    """``handler(sender, payload)`` as the application layer calls handlers."""
    return lambda message, sender: handler(sender, message)


class _SimRunner:
    """Runs user code at once; its outcome reaches the core ``delay_s`` later."""

    def __init__(self, network: SimNetwork, node: Callable[[], SimNode]) -> None:
        self._network = network
        self._node = node

    def run(self, call: Call, done: Done | None) -> None:
        try:
            result, exc = call(), None
        except Exception as error:  # a failing handler is an outcome, reported back
            result, exc = None, error
        if done is None:
            return
        delay = self._network.handler_delay_s
        if delay <= 0:
            done(result, exc)
            return
        node = self._node()

        def finish() -> None:
            if node.alive and self._network.nodes.get(node.node_id) is node:
                done(result, exc)

        self._network._schedule(delay, finish)

    def run_each(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        for item in items:
            self.run(functools.partial(fn, item), None)

    def close(self) -> None:
        """Nothing runs in the background."""


class SimNetwork:
    """Many NodeCores on one virtual clock, joined by a seeded lossy network."""

    def __init__(
        self,
        seed: int,
        *,
        config: NodeConfig | None = None,
        latency_s: float = 0.001,
        jitter_s: float = 0.0005,
        loss_rate: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or NodeConfig()
        self.faults = FaultModel(
            self.rng,
            NetworkConditions(latency=latency_s, jitter=jitter_s, packet_loss_rate=loss_rate),
        )
        #: each node id's index, fixed at its first start (conditions name nodes by index)
        self.index_of: dict[str, int] = {}
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self._by_address: dict[str, SimNode] = {}
        self._by_pub: dict[str, SimNode] = {}
        #: the node ids whose SUB reads each PUB address (stale ids are checked on use)
        self._readers: dict[str, dict[str, None]] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._trace = hashlib.blake2b(digest_size=16)
        self._restarts = itertools.count(1)
        self.deliveries = 0
        #: virtual time a handler takes before its outcome (reply, acknowledgement) is back
        self.handler_delay_s = 0.0

    # ------------------------------------------------------------ topology

    def add_node(
        self,
        node_id: str,
        *,
        seeds: Iterable[str] = (),
        start: bool = True,
        address_of: str | None = None,
        capabilities: Capabilities = SUPPORTED,
        tags: Mapping[str, str] | None = None,
        disk: SimDisk | None = None,
    ) -> SimNode:
        """Create a node (a new incarnation if ``node_id`` ran before) and start it.

        ``address_of`` gives it the addresses of another (crashed) node, as when a
        rescheduled container gets the IP address of one that died. ``capabilities``
        makes it behave as a node of an earlier revision that announces only those
        (``("fields",)``: revision 1.1, heartbeats to everyone). ``disk`` is its durable
        store (``state_dir``): what an earlier life left there is restored.
        """
        index = len(self._by_address) + 1
        old = self.nodes.get(address_of or node_id)
        if old is not None:
            address, pub_address = old.core.address, old.core.me.pub_address
        else:
            address, pub_address = f"sim{index}:7000", f"sim{index}:7001"
        incarnation = (int(self.now * 1000) << 20) | next(self._restarts)
        core = NodeCore(
            node_id,
            incarnation,
            address,
            pub_address,
            seeds=tuple(seeds),
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            capabilities=capabilities,
            tags=checked_tags(tags),
            durable=disk is not None,
        )
        app = Application(
            node_id, self.config, _RawBytes(), lambda name: node.handler(name), _gate()
        )
        node = SimNode(core, app, Encoder(node_id, incarnation), disk=disk)
        app.attach(
            incarnation,
            _SimRunner(self, lambda: node),
            lambda event: self._feed(node, event),
            core.counters,
        )
        if disk is not None:
            app.restored(core.restore(disk.restored(), self.now))
        self.nodes[node_id] = node
        self.index_of.setdefault(node_id, len(self.index_of))
        self._by_address[address] = node
        self._by_pub[pub_address] = node
        if start:
            self.start(node_id)
        return node

    def start(self, node_id: str) -> None:
        """Start a node added with ``start=False`` (its handlers set meanwhile)."""
        node = self.nodes[node_id]
        self._feed(node, ev.Started())
        phase = self.rng.uniform(0, self.config.tick_interval_s)
        self._schedule(phase, self._ticker(node))

    def crash(self, node_id: str) -> None:
        """Stop a node dead: no leave, nothing more sent or received."""
        node = self.nodes[node_id]
        node.alive = False
        if node.disk is not None:
            node.disk.crash(self.rng)
        self._record(node_id, "crash")

    def stop(self, node_id: str) -> None:
        """Stop a node gracefully: it delivers what it accepted, announces leaving, then
        stops (``begin_stop``, the network run until it has left, ``end_stop``)."""
        node = self.nodes[node_id]
        self.begin_stop(node_id)
        self.run_until(lambda: node.core.has_left, self.config.graceful_stop_max_s)
        self.end_stop(node_id)

    def begin_stop(self, node_id: str) -> None:
        """Ask a node to leave; it goes on running until ``end_stop``, as a real one does
        until its leave is done (``core.has_left``) or out of time."""
        self._feed(self.nodes[node_id], ev.LeaveRequested())

    def end_stop(self, node_id: str) -> None:
        self.nodes[node_id].alive = False
        self._record(node_id, "stop")

    @property
    def conditions(self) -> NetworkConditions:
        return self.faults.conditions

    def set_conditions(self, conditions: NetworkConditions) -> None:
        """Change the network's behaviour from now on (messages in flight keep their fate)."""
        self.faults.conditions = conditions
        self._record("*", f"conditions {conditions!r}")

    @property
    def loss_rate(self) -> float:
        return self.conditions.packet_loss_rate

    @loss_rate.setter
    def loss_rate(self, rate: float) -> None:
        self.set_conditions(dataclasses.replace(self.conditions, packet_loss_rate=rate))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups of node ids (both ways)."""
        indexed = [[self.index_of[n] for n in group] for group in groups]
        self.set_conditions(dataclasses.replace(self.conditions, partition_groups=indexed))

    def block(self, source: str, destination: str) -> None:
        """Cut one direction of one link: ``destination`` stops hearing ``source``."""
        link = (self.index_of[source], self.index_of[destination])
        blocked = {*self.conditions.blocked_links, link}
        self.set_conditions(dataclasses.replace(self.conditions, blocked_links=blocked))

    def heal(self) -> None:
        """Remove every partition and link cut (other conditions stay)."""
        self.set_conditions(
            dataclasses.replace(self.conditions, partition_groups=(), blocked_links=())
        )

    # ------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        self._run(self.now + seconds, None)

    def run_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Advance virtual time until ``predicate()`` holds; False if ``timeout_s`` passes first."""
        return self._run(self.now + timeout_s, predicate)

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def views_agree(self) -> bool:
        digests = {n.core.digest() for n in self.live()}
        return len(digests) == 1

    def all_see(self, node_id: str, status: MemberStatus) -> bool:
        """Every live node (other than ``node_id``) sees ``node_id`` in ``status``."""
        for node in self.live():
            if node.node_id == node_id:
                continue
            member = node.core.member(node_id)
            if member is None or member.status is not status:
                return False
        return True

    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # ------------------------------------------------------------ messaging

    def send(
        self,
        node_id: str,
        target: str,
        name: str,
        payload: bytes,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_LEAST_ONCE,
        ttl_s: float | None = None,
    ) -> int:
        """Send from ``node_id`` to ``target``; returns the message number (see ``acks``)."""
        node = self.nodes[node_id]
        if not guarantee.is_reliable:
            self._feed(node, ev.SendRequested(target, name, payload, guarantee))
            return 0
        ttl = self.config.message_ttl_s if ttl_s is None else ttl_s
        node.app.gate.take(target, 0)
        _, event = node.app.register_send(target, name, payload, guarantee, ttl)
        self._feed(node, event)
        return event.number

    def publish(
        self,
        node_id: str,
        topic: str,
        payload: bytes,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE,
    ) -> None:
        self._feed(self.nodes[node_id], ev.PublishRequested(topic, payload, guarantee))

    def transaction(
        self,
        node_id: str,
        targets: Iterable[str],
        name: str,
        payload: bytes,
        timeout_s: float | None = None,
    ) -> int:
        """Start a transaction from ``node_id``; returns its number (see ``transactions``)."""
        node = self.nodes[node_id]
        timeout = self.config.transaction_timeout_s if timeout_s is None else timeout_s
        number = node.app.next_number()
        self._feed(node, ev.TransactionStarted(number, tuple(targets), name, payload, timeout))
        return number

    def subscribe(self, node_id: str, topic: str, *, replay: bool = False) -> None:
        self._feed(self.nodes[node_id], ev.TopicSubscribed(topic, replay))

    def subscribe_prefix(self, node_id: str, prefix: str) -> None:
        self._feed(self.nodes[node_id], ev.PrefixSubscribed(prefix))

    # ------------------------------------------------------------ internals

    def _run(self, until: float, predicate: Callable[[], bool] | None) -> bool:
        queue = self._queue
        check_at = self.now
        while queue and queue[0][0] <= until:
            if predicate is not None and queue[0][0] >= check_at:
                # Checking after every event would dominate the run; every 10 ms is enough.
                if predicate():
                    return True
                check_at = queue[0][0] + PREDICATE_INTERVAL_S
            when, _, action = heapq.heappop(queue)
            self.now = when
            action()
        self.now = max(self.now, until)
        return predicate() if predicate is not None else True

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._order), action))

    def _ticker(self, node: SimNode) -> Callable[[], None]:
        """The node's periodic tick, until it stops or is replaced. (Built once per node:
        ticks are most of what a large quiet simulation does.)"""
        node_id, interval, nodes = node.node_id, self.config.tick_interval_s, self.nodes

        def tick() -> None:
            if node.alive and nodes.get(node_id) is node:
                self._feed(node, _TIMER)
                self._schedule(interval, tick)

        return tick

    def _record(self, who: str, what: str) -> None:
        self._trace.update(f"{self.now:.6f} {who} {what}\n".encode())

    def _feed(self, node: SimNode, event: ev.Event) -> None:
        effects = node.core.handle(event, self.now)
        node.encoder.tags = node.core.records_carry_tags
        for effect in effects:
            self._apply(node, effect)
        # A tick ends its own turn: unless it did something, nothing is left to flush.
        if (effects or event is not _TIMER) and node.core.flush_due and not node.turn_end_scheduled:
            node.turn_end_scheduled = True
            self._schedule(0.0, lambda: self._end_turn(node))

    def _end_turn(self, node: SimNode) -> None:
        node.turn_end_scheduled = False
        if node.alive and self.nodes.get(node.node_id) is node:
            self._feed(node, ev.TurnEnded())

    def _fate(self, source: SimNode, destination: SimNode) -> tuple[float, ...]:
        index = self.index_of
        return self.faults.fate(index[source.node_id], index[destination.node_id])

    def _deliver_later(self, target: SimNode, delay: float, event: ev.EnvelopeReceived) -> None:
        def arrive() -> None:
            if target.alive and self.nodes.get(target.node_id) is target:
                self.deliveries += 1
                sender, incarnation, seq = event.envelope.message_id
                self._trace.update(
                    f"{self.now:.6f} {target.node_id}<{sender}/{incarnation}/{seq}\n".encode()
                )
                self._feed(target, event)

        self._schedule(delay, arrive)

    def _apply(self, node: SimNode, effect: fx.Effect) -> None:
        if not node.alive:
            return
        match effect:
            case fx.Send(address=address, message=message, payload=payload):
                frames = node.encoder.direct(message, payload)
                target = self._by_address.get(address)
                if target is None:
                    return
                delays = self._fate(node, target)
                if not delays:
                    return
                try:
                    envelope, payload = decode_direct(frames, self.config.max_header_bytes)
                except WireError as exc:  # pragma: no cover - the core never encodes garbage
                    raise AssertionError(f"core sent an invalid frame: {exc}") from exc
                for delay in delays:
                    self._deliver_later(target, delay, ev.EnvelopeReceived(envelope, payload))
            case fx.Publish(topic=topic, message=message, payload=payload):
                published = node.encoder.published(topic, message, payload)
                decoded_topic, envelope, payload = decode_published(
                    published, self.config.max_header_bytes
                )
                event = ev.EnvelopeReceived(envelope, payload, decoded_topic)
                pub = node.core.me.pub_address
                to = message.to if isinstance(message, msg.Heartbeat | msg.Flush) else None
                nodes = self.nodes
                for node_id in (to,) if to is not None else tuple(self._readers.get(pub, ())):
                    other = nodes[node_id]
                    if other is node or pub not in other.subscribed_to:
                        continue
                    if topic is not None and not other.lets_through(topic):
                        continue
                    for delay in self._fate(node, other):
                        self._deliver_later(other, delay, event)
            case fx.Connect(node_id=peer, pub_address=pub):

                def connected() -> None:
                    node.subscribed_to.setdefault(pub, set()).add(peer)
                    self._readers.setdefault(pub, {})[node.node_id] = None

                self._schedule(CONNECT_DELAY_S, connected)
            case fx.Disconnect(node_id=peer, pub_address=pub):
                readers = node.subscribed_to.get(pub, set())
                readers.discard(peer)
                if not readers:
                    node.subscribed_to.pop(pub, None)
            case fx.SetSubscription(topic=topic, subscribed=on, prefix=True):
                if on:
                    node.prefix_filters[topic] = None
                else:
                    node.prefix_filters.pop(topic, None)
            case fx.SetSubscription(topic=topic, subscribed=on):
                if on:
                    node.filters.add(topic)
                else:
                    node.filters.discard(topic)
            case fx.Persist(batch=batch, records=records):
                disk = node.disk
                assert disk is not None, "a core without a store asked to persist"
                disk.submit(batch, records)

                def written() -> None:
                    if node.alive and disk.confirm(batch):  # (a dead life's write is lost)
                        self._feed(node, ev.Persisted(batch))

                self._schedule(disk.write_delay_s, written)
            case fx.ResolveSeeds(seeds=seeds):
                self._feed(node, ev.SeedsResolved(tuple(seeds)))
            case _:
                self._observe(node, effect)
                node.appliers[type(effect)](effect)

    def _observe(self, node: SimNode, effect: fx.Effect) -> None:
        """Record what the application layer is given, for tests and the trace."""
        match effect:
            case fx.Deliver(sender=sender, name=name, payload=payload):
                node.delivered.append((sender, name, payload))
            case fx.DeliverPublications(sender=sender, topic=topic, payloads=payloads):
                node.delivered.extend((sender, topic, payload) for payload in payloads)
            case fx.CompleteRequest(request_id=request_id):
                node.completed[request_id] = effect
            case fx.Acknowledged(outcomes=outcomes):
                for number, status, reason in outcomes:
                    if number in node.acks:
                        raise AssertionError(f"message {number} got a second final status")
                    node.acks[number] = (status, reason)
            case fx.PublicationsLost():
                node.losses.append(effect)
            case fx.TransactionDone(number=number):
                if number in node.transactions:
                    raise AssertionError(f"transaction {number} got a second result")
                node.transactions[number] = effect
            case fx.MemberChanged(member=member):
                self._record(node.node_id, _describe(member))


#: events are values: one tick event serves every tick
_TIMER = ev.TimerFired()


def _gate() -> OutboxGate:
    return OutboxGate(_UNBOUNDED_COUNT)


def _describe(member: Member) -> str:
    return f"{member.node_id}@{member.incarnation}v{member.version}={member.status}"


def describe_views(network: SimNetwork) -> dict[str, Any]:
    """Each live node's view, for failure messages."""
    return {n.node_id: {k: str(v) for k, v in n.view().items()} for n in network.live()}
