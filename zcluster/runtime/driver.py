"""The driver: sockets in, core events; core effects out, socket calls.

It holds no protocol decisions. Frames are read in batches with
non-blocking receives (one wake-up drains many messages) straight from the
ZeroMQ file descriptors registered with the asyncio loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import zmq

from zcluster.address import format_address, parse_address
from zcluster.application import raise_too_large
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.errors import ConfigError, WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.runtime.inbound import InboundConnections
from zcluster.runtime.lane import PublicationLane, Waiting
from zcluster.runtime.ledger import MESSAGE_OVERHEAD_BYTES, STRANGERS, Ledger
from zcluster.runtime.memory import return_free_memory
from zcluster.runtime.secured import SecuredConnections, receive_with_user_id
from zcluster.runtime.store import StateStore
from zcluster.runtime.transport import NOWAIT, RECV, Transport, receive_message, receive_rest
from zcluster.security.policy import PUBSUB_DOMAIN
from zcluster.serialization import Serializer
from zcluster.wire import (
    ONE_FRAME_PREFIX,
    Encoder,
    check_user_topic,
    cut_one_frame,
    decode_direct,
    decode_published,
    one_frame_prefix,
    prefix_filters,
    read_publish,
    topic_frame,
)

log = logging.getLogger("zcluster.driver")

#: a rejected frame is logged the first time and then once per this many
REJECT_LOG_EVERY_COUNT = 1000
#: a batch of reads looks at the clock (receive_batch_max_s) every 16 messages: the fast
#: path of fan-out takes about a microsecond per message, a clock reading a twentieth
_CLOCK_EVERY_MASK = 15
#: stamped by the core with what it knows (core/causal.py)
CAUSAL = DeliveryGuarantee.CAUSAL


class Application(Protocol):
    """The layer above the driver that runs user code (``zcluster.application``)."""

    #: each subscribed topic by how its publications start (either form)
    topic_frames: dict[bytes, str]

    def appliers(self) -> dict[type, Callable[[Any], None]]: ...

    def deliver_publications(self, sender: str, topic: str, payloads: list[bytes]) -> None: ...

    #: how the application serializes messages
    serializer: Serializer
    #: payload bytes handed to user code and not yet done with
    ledger: Ledger
    #: whose share of the ledger a sender's messages are charged to
    share_of: Callable[[str], str]


def resolve_seeds(seeds: Sequence[str]) -> tuple[str, ...]:
    """Turn seed names into addresses; a name with several addresses gives several seeds."""
    out: list[str] = []
    for seed in seeds:
        try:
            host, port = parse_address(seed)
        except ConfigError:
            log.warning("ignoring invalid seed %r", seed)
            continue
        try:
            ipaddress.ip_address(host)
            candidates = [host]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("cannot resolve seed %s: %s", seed, exc)
                continue
            candidates = [str(info[4][0]) for info in infos]
        for ip in candidates:
            address = format_address(ip, port)
            if address not in out:
                out.append(address)
    return tuple(out)


#: the longest a protocol message is shown in a debug line
_SHOWN_MAX_CHARS = 300


def _shown(message: object) -> str:
    text = repr(message)
    return text if len(text) <= _SHOWN_MAX_CHARS else text[: _SHOWN_MAX_CHARS - 3] + "..."


#: direct message kinds that queue callbacks (handlers, subscribers, loss reports)
_CALLING = frozenset({msg.Send, msg.Request, msg.Data, msg.DataBatch, msg.Republish, msg.Lost})
#: of those, the ones sent again until taken (retransmitted, fetched again): while the
#: callbacks are behind they are dropped, not held, or copies would fill the holding
_SENT_AGAIN = frozenset({msg.Data, msg.DataBatch, msg.Republish, msg.Lost})


def _decode_router(frames: list[bytes], limit: int) -> ev.EnvelopeReceived:
    envelope, payload = decode_direct(frames[1:], limit)  # frames[0]: the ROUTER's routing id
    return ev.EnvelopeReceived(envelope, payload)


def _decode_sub(frames: list[bytes], limit: int) -> ev.EnvelopeReceived:
    topic, envelope, payload = decode_published(frames, limit)
    return ev.EnvelopeReceived(envelope, payload, topic)


class Driver:
    """Runs one NodeCore on one asyncio loop with real ZeroMQ sockets."""

    def __init__(
        self,
        core: NodeCore,
        transport: Transport,
        app: Application,
        loop: asyncio.AbstractEventLoop,
        inbound: InboundConnections,
        clock: Callable[[], float] = time.monotonic,
        security: SecuredConnections | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.core = core
        #: the connections peers make to our ROUTER and PUB, let in within the budget
        self.inbound = inbound
        #: where the core's records go (None: no state_dir)
        self.store = store
        #: the security policy carried out (None: security mode none)
        self.security = security
        self._receive_router = receive_message if security is None else receive_with_user_id
        self.transport = transport
        self.app = app
        self.loop = loop
        self.clock = clock
        self.counters = core.counters
        self._config = core.config
        self._encoder = Encoder(core.node_id, core.incarnation, check_user_topic)
        #: the node's encoder, shared by whatever else sends in its name (AUTH)
        self.encoder = self._encoder
        self._encoder.tags = core.records_carry_tags
        #: the PUB socket, shared with threads that publish
        self.lane = PublicationLane(
            core.node_id,
            self._encoder,
            transport.pub,
            app.serializer.serialize,
            core.config,
            core.publisher.publications,
        )
        self._pub_fd = cast(int, transport.pub.getsockopt(zmq.FD))
        self._pub_handle: asyncio.TimerHandle | None = None
        #: how to carry out each kind of effect: sockets here, user code in the application
        self._appliers: dict[type, Callable[[Any], None]] = {
            fx.Publish: self._publish,
            fx.Persist: self._persist,
            fx.Send: self._send,
            fx.Connect: self._connect,
            fx.Disconnect: self._disconnect,
            fx.SetSubscription: self._set_subscription,
            fx.ResolveSeeds: lambda effect: self._resolve(effect.seeds),
            **app.appliers(),
        }
        #: effects carried out by the application, outside the core's lock
        self._app_effects = frozenset(app.appliers())
        #: events from other threads that need no wake-up: taken before the next message
        #: read from the ROUTER is, and on every tick
        self._quiet: collections.deque[ev.Event] = collections.deque()
        #: events to feed together later in this turn (feed_soon)
        self._soon: list[ev.Event] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_trim = clock() + self._config.memory_trim_interval_s
        self._resolving = False
        self._turn_end_scheduled = False
        #: whether publications are read (a full callback queue pauses it)
        self._reading = False
        #: whether the ROUTER is read: from start to close, also while publications pause
        self._reading_router = False
        #: why publications are not read: the callbacks' queue is full by count
        #: ("callbacks", the runner's) or by bytes ("bytes", the ledger's)
        self._pauses: set[str] = set()
        #: SEND and REQUEST held while publications pause; their payload bytes, in all and
        #: per share, are bounded as the ledger's are, but kept apart from it: the ledger
        #: must be able to empty (and resume reading) while they wait
        self._held: list[ev.EnvelopeReceived] = []
        self._held_bytes: dict[str, int] = {}
        self._held_total_bytes = 0
        self._ledger = app.ledger
        app.share_of = self.share_of
        self._ledger.on_full = lambda: self.pause_reading("bytes")
        self._ledger.on_room = lambda: self._call_on_loop(self.resume_reading, "bytes")
        self._closed = False
        #: kinds of events and effects whose failure was logged (once each: there are few)
        self._failures_told: set[str] = set()
        #: whether protocol messages are logged as they come and go (``--log-level debug``)
        self._debug = log.isEnabledFor(logging.DEBUG)
        #: fault injection for tests (zcluster.testing): the delays after which each
        #: received message is handled, () to drop it; None handles everything at once
        self.inbound_faults: Callable[[ev.EnvelopeReceived], tuple[float, ...]] | None = None
        #: held while the core handles an event and its effects are carried out: the
        #: blocking API takes guaranteed sends in the caller's thread (send_guaranteed).
        #: Reentrant: an inline callback (asyncio API) may feed the core from within.
        self.core_lock = threading.RLock()
        self._router_fd = cast(int, transport.router.getsockopt(zmq.FD))
        #: each SUB read, by its descriptor, with the members whose PUB it reads: one
        #: SUB for all of them (security mode none), or one per PUB when secured, so
        #: that the connection names the publisher (runtime/transport.py)
        self._subs: dict[int, tuple[zmq.Socket[bytes], set[str] | None]] = {}
        if security is None:
            self._subs[cast(int, transport.sub.getsockopt(zmq.FD))] = (transport.sub, None)
        transport.on_subscribed = self._sub_opened
        transport.on_unsubscribed = self._sub_closed

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        self.resume_reading()
        self._watch_pub()
        self.loop.call_soon(self._take_subscriptions)  # some may be there already
        self.feed(ev.Started())
        self._tick_handle = self.loop.call_later(self._config.tick_interval_s, self._tick)

    def close(self) -> None:
        if self._closed:
            return
        with self.core_lock:  # a send taken in a caller's thread is either out or refused
            self.feed(ev.TurnEnded())  # what waits for it leaves now: batches, acknowledgements
            self._closed = True
        self.pause_reading()
        self._stop_reading_router()
        self.loop.remove_reader(self._pub_fd)
        if self._pub_handle is not None:
            self._pub_handle.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self.lane.close()
        with self.core_lock:
            self.inbound.close()
            self.transport.close()
            if self.store is not None:
                self.store.close()

    def _watch_pub(self) -> None:
        """Have the PUB take what its subscribers sent when its descriptor signals, at
        most every ``subscriptions_take_interval_s`` (lane.take_subscriptions): prompt
        for a subscriber, cheap for a node that publishes (its sends take them too)."""
        self._pub_handle = None
        if not self._closed:  # (it signals again if some came meanwhile, not yet taken)
            self.loop.add_reader(self._pub_fd, self._take_subscriptions)

    def _take_subscriptions(self) -> None:
        if self._closed or self._pub_handle is not None:
            return
        self.loop.remove_reader(self._pub_fd)
        self.lane.take_subscriptions()
        interval = self._config.subscriptions_take_interval_s
        self._pub_handle = self.loop.call_later(interval, self._watch_pub)

    def pause_reading(self, why: str = "callbacks") -> None:
        """The callbacks' queue is full (``why``: by count or by bytes): stop reading
        publications. The ROUTER is still read, always, so that probes,
        acknowledgements and membership are answered and a busy node is not declared
        down; of what would queue more callbacks, SEND and REQUEST are held back
        within their sender's share of the ledger (refused past it), what is sent
        again until taken (DATA, REPUBLISH, LOST) is dropped and comes again."""
        self._pauses.add(why)
        if self._reading:
            self._reading = False
            for fd in self._subs:
                self.loop.remove_reader(fd)

    def resume_reading(self, why: str = "callbacks") -> None:
        if why == "bytes" and self._ledger.full:
            return  # full again before this call came: its next on_room resumes
        self._pauses.discard(why)
        if self._reading or self._closed or self._pauses:
            return
        self._reading = True
        for fd in self._subs:
            self.loop.add_reader(fd, self._read_sub, fd)
        if not self._reading_router:
            self._reading_router = True
            self.loop.add_reader(self._router_fd, self._read_router)
        held, self._held = self._held, []
        self._held_bytes.clear()
        self._held_total_bytes = 0
        if held:
            self.feed_many(held)
        # The descriptors are edge-triggered: messages may already be waiting.
        self.loop.call_soon(self._read_router)
        self._read_subs_soon()

    def _read_subs_soon(self) -> None:
        for fd in self._subs:
            self.loop.call_soon(self._read_sub, fd)

    def _sub_opened(self, sock: zmq.Socket[bytes], readers: set[str]) -> None:
        fd = cast(int, sock.getsockopt(zmq.FD))
        self._subs[fd] = (sock, readers)
        if self._reading:
            self.loop.add_reader(fd, self._read_sub, fd)
            self.loop.call_soon(self._read_sub, fd)

    def _sub_closed(self, sock: zmq.Socket[bytes]) -> None:
        fd = cast(int, sock.getsockopt(zmq.FD))
        if self._subs.pop(fd, None) is not None and self._reading:
            self.loop.remove_reader(fd)

    def _stop_reading_router(self) -> None:
        if self._reading_router:
            self._reading_router = False
            self.loop.remove_reader(self._router_fd)

    # ------------------------------------------------------------ input

    def feed(self, event: ev.Event) -> None:
        if not self._closed:
            self.feed_many((event,))

    def feed_many(self, events: Sequence[ev.Event]) -> None:
        if self._closed:
            self.counters["calls_dropped_after_stop"] += len(events)
            return
        handle, on_sockets = self.core.handle, self._on_sockets
        effects: list[fx.Effect] = []
        try:
            with self.core_lock:
                now = self.clock()
                for event in events:
                    try:
                        effects += on_sockets(handle(event, now))
                    except Exception as exc:  # one event's failure must not stop the node
                        self._event_failed(event, exc)
        finally:  # what earlier events decided is carried out whatever a later one raised
            self.apply(effects)
        # What every member reads, as the core's view now says (after each batch).
        self.lane.one_frame = self.core.one_frame_publications
        self._encoder.tags = self.core.records_carry_tags
        self._end_turn_later()

    def feed_soon(self, event: ev.Event) -> None:
        """Feed ``event`` later in this turn of the loop, with the others fed so since (from
        the loop's thread): handlers' outcomes, which come back by the batch."""
        soon = self._soon
        soon.append(event)
        if len(soon) == 1:
            self.loop.call_soon(self._feed_soon)

    def _feed_soon(self) -> None:
        events, self._soon = self._soon, []
        self.feed_many(events)

    def send_guaranteed(self, event: ev.SendRequested) -> bool:
        """Take a guaranteed send in the caller's thread (blocking API), without waking
        the loop: numbered into its outbox and sent on the DEALER at once, under the
        core's lock. One the core refuses is decided here too, so that no later send of
        this thread can overtake it; the loop carries out the refusal (the failed
        acknowledgement). False once the node is closing: it takes nothing more."""
        with self.core_lock:
            core, now = self.core, self.clock()
            if self._closed:
                return False
            transmits = core.take_send(event, now)
            if transmits is None:
                decided = core.handle(event, now)  # a refusal, or a send the core stamps
                with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                    self.loop.call_soon_threadsafe(self._apply_and_end_turn, decided)
                return True
            for transmit in transmits:
                try:
                    self._transmit(*transmit)
                except zmq.ZMQError as exc:  # kept in the outbox: the retry timer resends it
                    self._failed("Send", exc)
            if core.flush_due and not self._turn_end_scheduled:
                # A send joined a batch: it leaves when the loop's turn ends (one wake-up
                # per batch; docs/architecture.md, "Guaranteed sends in batches").
                self._turn_end_scheduled = True
                with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                    self.loop.call_soon_threadsafe(self._end_turn)
        return True

    def publish_causal(self, topic: str, payload: bytes) -> Waiting | None:
        """Number, keep and send a CAUSAL publication in the caller's thread, stamped with
        what this node's core knows now (under its lock, so that no CAUSAL message of
        this node is stamped in between); as ``PublicationLane.try_numbered``."""
        with self.core_lock:
            core = self.core
            stamped = core.causal.stamp(payload)
            if len(stamped) > self._config.max_message_bytes:
                raise_too_large(stamped, self._config.max_message_bytes)
            seq, waiting = self.lane.try_numbered_payload(topic, stamped, CAUSAL)
            core.causal.published(topic, seq, self.clock())
        return waiting

    def _apply_and_end_turn(self, effects: list[fx.Effect]) -> None:
        self.apply(effects)
        self._end_turn_later()

    def _end_turn_later(self) -> None:
        """Acknowledgements and fetches go out once per loop turn, batched."""
        if self.core.flush_due and not self._turn_end_scheduled:
            self._turn_end_scheduled = True
            self.loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._turn_end_scheduled = False
        self.feed(ev.TurnEnded())

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(self._config.tick_interval_s, self._tick)
        self._debug = log.isEnabledFor(logging.DEBUG)  # a level may change at run time
        self._take_quiet()
        self.feed(ev.TimerFired())
        now = self.clock()
        with self.core_lock:
            self.transport.close_idle(now)
        if now >= self._next_trim:
            self._next_trim = now + self._config.memory_trim_interval_s
            return_free_memory()
        if self.security is not None:
            with self.core_lock:  # a reload opens and closes connections
                self.security.check_files(now)

    def reconnect(self, node_id: str, address: str, pub_address: str, connect: bool) -> None:
        """Open (``connect``) or close our connections to a member, its membership
        unchanged: its key was revoked, or authorized again."""
        if connect:
            self.transport.connect_member(node_id, address, pub_address, self.clock())
        else:
            self.transport.disconnect_member(node_id, address, pub_address)

    def cut_subscribers(self) -> None:
        """Close the connections to our PUB: each subscriber is let in again only if the
        policy still allows it (keys were revoked)."""
        try:
            with self.lane.lock:
                self.transport.cut_subscribers(
                    functools.partial(self.inbound.forget_socket, PUBSUB_DOMAIN)
                )
        except zmq.ZMQError as exc:  # the port was taken meanwhile: nobody hears us
            self._failed("binding the PUB again", exc)
            return
        self.counters["subscribers_cut"] += 1

    def _read_router(self) -> None:
        self._drain(self.transport.router, "router", _decode_router, self._read_router)

    def _read_sub(self, fd: int) -> None:
        """Read a batch from a SUB on the fast path of fan-out (docs/architecture.md):
        publications on subscribed topics with a plain header are read without building
        an envelope; unnumbered ones go straight to the application, one call per run of
        them from one publisher on one topic, numbered ones to the core in one event per
        run of them. Everything else takes the full decoder. Whatever came first is
        handed on first. A SUB of one PUB (secured) takes only what its members send."""
        sub = self._subs.get(fd)
        if not self._reading or sub is None:
            return
        sock, readers = sub
        if self.inbound_faults is not None:  # tests: every message through the faults
            again = functools.partial(self._read_sub, fd)
            self._drain(sock, "sub", _decode_sub, again, readers)
            return
        routes = self.app.topic_frames
        deliver = self.app.deliver_publications
        limit = self._config.max_header_bytes
        heard: dict[str, int] = {}
        unnumbered = 0
        run: list[bytes] = []  # unnumbered payloads from run_from on run_topic, in order
        run_from = run_topic = ""
        numbered: list[tuple[str, int, str, int, DeliveryGuarantee, bytes]] = []

        def hand_on_run() -> None:
            nonlocal run
            if run:
                taken, run = run, []
                deliver(run_from, run_topic, taken)

        def hand_on_numbered(unnumbered_count: int = 0) -> None:
            nonlocal numbered
            if unnumbered_count or numbered:
                batch, numbered = numbered, []
                event = ev.PublicationsReceived(tuple(heard.items()), unnumbered_count, batch)
                self.feed(event)

        deadline = time.perf_counter() + self._config.receive_batch_max_s
        try:
            for i in range(self._config.receive_batch_count):
                if not i & _CLOCK_EVERY_MASK and time.perf_counter() > deadline:
                    break
                # Three plain reads for the three-frame form; the frame count is checked
                # only off the fast path (transport.receive_rest): a well-formed peer
                # never breaks it.
                first = RECV(sock, NOWAIT)
                one_frame = first[:1] == ONE_FRAME_PREFIX
                if one_frame:
                    pieces = cut_one_frame(first)
                    if pieces is None:
                        self._reject("sub", WireError("malformed one-frame publication"))
                        continue
                    key, header, payload = pieces
                else:
                    try:
                        header = RECV(sock, NOWAIT)
                    except zmq.Again:
                        self._reject("sub", WireError("published message of 1 frame"))
                        return
                    key, payload = first, b""
                topic = routes.get(key)
                publication = read_publish(header) if topic is not None else None
                if topic is None or publication is None:
                    hand_on_run()
                    hand_on_numbered()
                    self._take_slowly(sock, first, header, one_frame, limit, readers)
                    continue
                if not one_frame:
                    last = self._last_frame(sock)
                    if last is None:
                        return
                    payload = last
                publisher, incarnation, seq, guarantee = publication
                if readers is not None and publisher not in readers:
                    self._forged(publisher, readers)
                    continue
                heard[publisher] = incarnation
                if seq:
                    if run:
                        hand_on_run()
                    numbered.append((publisher, incarnation, topic, seq, guarantee, payload))
                    continue
                if numbered:  # what came first is handed on first
                    hand_on_numbered()
                if run and (publisher != run_from or topic != run_topic):
                    hand_on_run()
                if not run:
                    run_from, run_topic = publisher, topic
                run.append(payload)
                unnumbered += 1
            self.loop.call_soon(self._read_sub, fd)
        except zmq.Again:
            pass
        finally:
            hand_on_run()
            hand_on_numbered(unnumbered)

    def _take_slowly(
        self,
        sock: zmq.Socket[bytes],
        first: bytes,
        header: bytes,
        one_frame: bool,
        limit: int,
        readers: set[str] | None,
    ) -> None:
        """The full decoder and the core, for whatever the fast path does not take."""
        try:
            frames = [first] if one_frame else receive_rest(sock, [first, header])
            event = _decode_sub(frames, limit)
        except WireError as exc:
            self._reject("sub", exc)
            return
        if readers is not None and event.envelope.sender not in readers:
            self._forged(event.envelope.sender, readers)
            return
        self.feed(event)

    def _forged(self, claimed: str, readers: set[str]) -> None:
        """A PUB sent a message in the name of another node than its own: dropped."""
        if self.security is not None:
            behind = ", ".join(sorted(readers))
            self.security.policy.refused("publisher", f"the PUB of {behind} spoke as {claimed}")

    def _last_frame(self, sock: zmq.Socket[bytes]) -> bytes | None:
        try:
            return RECV(sock, NOWAIT)
        except zmq.Again:
            self._reject("sub", WireError("published message of 2 frames"))
            return None

    def _drain(
        self,
        sock: zmq.Socket[bytes],
        channel: str,
        decode: Callable[[list[bytes], int], ev.EnvelopeReceived],
        again: Callable[[], None],
        readers: set[str] | None = None,
    ) -> None:
        """Read up to one batch of waiting messages, fed to the core together; schedule
        another turn if more wait. ``readers``: the members a secured SUB reads."""
        router = channel == "router"
        if not (self._reading_router if router else self._reading):
            return
        limit, quiet = self._config.max_header_bytes, self._quiet
        read: list[ev.Event] = []
        deadline = time.perf_counter() + self._config.receive_batch_max_s
        clock = time.perf_counter
        try:
            for _ in range(self._config.receive_batch_count):
                if clock() > deadline:  # a header may take a while to decode: each time
                    break
                try:
                    frames = self._receive_router(sock) if router else receive_message(sock)
                except zmq.Again:
                    return
                if quiet:  # after the read: what was queued before this message was sent
                    if read:
                        taken, read = read, []
                        self.feed_many(taken)
                    self._take_quiet()
                try:
                    event = decode(frames, limit)
                except WireError as exc:
                    self._reject(channel, exc)
                    continue
                if self._debug:
                    envelope = event.envelope
                    sender, shown = envelope.sender, _shown(envelope.message)
                    log.debug("%s <- %s %s", self.core.node_id, sender, shown)
                security = self.security
                if router and security and not security.admits(frames[0], event):
                    continue  # AUTH, taken; or refused: counted and told by the policy
                if readers is not None and event.envelope.sender not in readers:
                    self._forged(event.envelope.sender, readers)
                    continue
                kind = type(event.envelope.message)
                if router and kind in _CALLING and not self._admitted(event, kind):
                    continue
                if self.inbound_faults is None:
                    read.append(event)
                else:
                    self._feed_with_faults(event, self.inbound_faults(event))
            self.loop.call_soon(again)
        finally:
            if read:
                taken, read = read, []
                self.feed_many(taken)

    def share_of(self, sender: str) -> str:
        """Whose share of the ledger ``sender``'s messages take: its own if it is a live
        member, the one of all strangers if not."""
        member = self.core.member(sender)
        return sender if member is not None and member.status.is_live else STRANGERS

    def _admitted(self, event: ev.EnvelopeReceived, kind: type) -> bool:
        """Whether a message that would queue callbacks is handed on now (False: held
        back while publications pause, or refused because its sender's share of the
        ledger is full: docs/architecture.md, "Memory")."""
        share = self.share_of(event.envelope.sender)
        ledger = self._ledger
        if not ledger.has_room(share):
            self._refuse_busy(event, share)
            return False
        if self._reading:
            return True
        if kind in _SENT_AGAIN:  # held, they would pile up: they come again
            self.counters["messages_dropped_while_paused"] += 1
            return False
        held_bytes, size = self._held_bytes, len(event.payload) + MESSAGE_OVERHEAD_BYTES
        mine = held_bytes.get(share, 0) + size
        if (
            self._held_total_bytes + size > ledger.max_bytes
            or mine + ledger.held_by(share) > ledger.sender_max_bytes
        ):
            self._refuse_busy(event, share)
            return False
        held_bytes[share] = mine
        self._held_total_bytes += size
        self._held.append(event)
        return False

    def _refuse_busy(self, event: ev.EnvelopeReceived, share: str) -> None:
        """A sender's share is full: its message is dropped (DATA comes again, later); a
        member's REQUEST is answered at once, at the address the table holds for it."""
        self.counters["messages_refused_busy"] += 1
        message = event.envelope.message
        if type(message) is not msg.Request or share == STRANGERS:
            return
        member = self.core.member(share)
        if member is not None and member.address == message.reply_address:
            reason = f"node {self.core.node_id} is busy: its handlers are behind; try again"
            reply = msg.Reply(message.request_id, False)
            try:
                self._transmit(member.address, reply, reason.encode())
            except zmq.ZMQError as exc:  # the read goes on: this answer is only a courtesy
                self._failed("Reply", exc)

    def _call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the node has stopped
            self.loop.call_soon_threadsafe(fn, *args)

    def _feed_with_faults(self, event: ev.EnvelopeReceived, delays: tuple[float, ...]) -> None:
        for delay in delays:
            if delay <= 0:
                self.feed(event)
            else:
                self.loop.call_later(delay, self.feed, event)

    def _reject(self, channel: str, exc: WireError) -> None:
        self.feed(ev.FrameRejected(channel, str(exc)))
        count = self.counters[f"frames_rejected_{channel}"]
        if count == 1 or count % REJECT_LOG_EVERY_COUNT == 0:
            log.warning("dropped malformed frame on %s (%d so far): %s", channel, count, exc)

    # ------------------------------------------------------------ effects

    def _on_sockets(self, effects: list[fx.Effect]) -> list[fx.Effect]:
        """Carry out the effects on sockets, in the core's order (the caller holds the
        core's lock, so that no send taken in another thread comes between); returns
        the application's, to ``apply`` once the lock is released: a thread that sends
        waits for the core, never for user code or acknowledgements."""
        theirs = self._app_effects
        self.apply([effect for effect in effects if type(effect) not in theirs])
        return [effect for effect in effects if type(effect) in theirs]

    def apply(self, effects: list[fx.Effect]) -> None:
        appliers = self._appliers
        for effect in effects:
            try:
                appliers[type(effect)](effect)
            except zmq.ZMQError as exc:  # one bad address or a full socket table, not a crash
                self._failed(type(effect).__name__, exc)
            except Exception as exc:  # a defect: counted, told once, the node goes on
                self.counters["effects_failed"] += 1
                self._first_failure(f"carrying out {type(effect).__name__}", exc)

    def _failed(self, what: str, exc: zmq.ZMQError) -> None:
        self.counters["effects_failed"] += 1
        log.warning("could not carry out %s: %s", what, exc)

    def _event_failed(self, event: ev.Event, exc: Exception) -> None:
        """The core raised on one event: the event is dropped (and what it had decided so
        far), counted, and told once per kind of event, with its sender; the node's own
        protocol goes on."""
        self.core.discard_effects()
        what = type(event).__name__
        if isinstance(event, ev.EnvelopeReceived):
            envelope = event.envelope
            what = f"{type(envelope.message).__name__} from {envelope.sender}"
        self.counters["events_failed"] += 1
        kind = what.split()[0]
        self._first_failure(f"handling {what}", exc, kind)

    def _first_failure(self, what: str, exc: Exception, kind: str | None = None) -> None:
        key = kind or what
        if key in self._failures_told:
            return
        self._failures_told.add(key)
        log.error(
            "node %s: %s raised %s: %s (counted; told once per kind)",
            self.core.node_id,
            what,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _persist(self, effect: fx.Persist) -> None:
        """Write a batch of the core's records, then tell it (what waited may go)."""
        store = self.store
        assert store is not None, "a core without a store asked to persist"
        try:
            store.write(effect.records)
        except Exception as exc:  # disk full, I/O error: the node goes on, said loudly
            self.counters["state_writes_failed"] += 1
            log.error(
                "%s: could not write to its state store (%s); what this batch held will "
                "not survive a crash",
                self.core.node_id,
                exc,
            )
        self.feed_soon(ev.Persisted(effect.batch))

    def _publish(self, effect: fx.Publish) -> None:
        if self._debug and type(effect.message) is not msg.Publish:
            log.debug("%s -> pub %s", self.core.node_id, _shown(effect.message))
        self.lane.publish(effect.topic, effect.message, effect.payload)

    def send_request(self, request: ev.RequestStarted) -> bool:
        """Send a request from the caller's thread (blocking API), without waking the loop;
        False if it must take the loop's path (no open connection to a live target).

        The core learns of it (``RequestSent``) before it takes the next message read
        from the ROUTER, so before the reply, which can only follow the send.
        """
        member = self.core.member(request.target)
        if member is None or not member.status.is_live or self._closed:
            return False
        message = msg.Request(request.name, request.request_id, self.core.address)
        frames = self._encoder.direct(message, request.payload)
        self._quiet.append(ev.RequestSent(request.request_id, request.timeout_s))
        if not self.transport.send_if_connected(member.address, frames):
            self._quiet.append(request)  # the core sends it (and times it out from then)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the node stopped
                self.loop.call_soon_threadsafe(self._take_quiet)
        return True

    def _take_quiet(self) -> None:
        quiet = self._quiet
        while quiet:
            self.feed(quiet.popleft())

    def send_reply(self, reply: ev.ReplyReady) -> None:
        """Send a request's reply from any thread (the handler's): at once over an open
        DEALER, without a hop to the loop; else through the loop and the core."""
        frames = self._encoder.direct(msg.Reply(reply.request_id, reply.ok), reply.payload)
        if not self.transport.send_if_connected(reply.reply_address, frames):
            with contextlib.suppress(RuntimeError):  # the loop is closed: the node stopped
                self.loop.call_soon_threadsafe(self.feed, reply)

    def _send(self, effect: fx.Send) -> None:
        if self._debug:
            log.debug("%s -> %s %s", self.core.node_id, effect.address, _shown(effect.message))
        self._transmit(effect.address, effect.message, effect.payload)

    def _transmit(self, address: str, message: msg.Message, payload: bytes) -> None:
        frames = self._encoder.direct(message, payload)
        if not self.transport.send(address, frames, self.clock()):
            self.counters["sends_dropped_queue_full"] += 1

    def _connect(self, effect: fx.Connect) -> None:
        if self.security is not None:
            member = self.core.member(effect.node_id)
            tags = dict(member.tags) if member is not None else {}
            security = self.security
            if not security.member_connected(
                effect.node_id, effect.address, effect.pub_address, tags
            ):
                return  # counted by the policy; connected later if that changes
        self.transport.connect_member(
            effect.node_id, effect.address, effect.pub_address, self.clock()
        )

    def _disconnect(self, effect: fx.Disconnect) -> None:
        self.transport.disconnect_member(effect.node_id, effect.address, effect.pub_address)
        if self.security is not None:
            self.security.member_disconnected(effect.node_id, effect.address)

    def _set_subscription(self, effect: fx.SetSubscription) -> None:
        # Either form a publisher may use (one frame once every member reads it).
        if effect.prefix:
            filters = prefix_filters(effect.topic)
        else:
            filters = (topic_frame(effect.topic), one_frame_prefix(effect.topic))
        for topic_filter in filters:
            self.transport.set_subscription(topic_filter, effect.subscribed)
        self._read_subs_soon()

    def _resolve(self, seeds: tuple[str, ...]) -> None:
        if self._resolving:
            return
        self._resolving = True
        future = self.loop.run_in_executor(None, resolve_seeds, seeds)

        def done(f: asyncio.Future[tuple[str, ...]]) -> None:
            self._resolving = False
            if not f.cancelled() and f.exception() is None:
                self.feed(ev.SeedsResolved(f.result()))

        future.add_done_callback(done)
