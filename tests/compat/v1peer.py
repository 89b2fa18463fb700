"""A minimal, strict protocol-version-1 peer, written from docs/protocol.md alone.

It imports nothing from ``zcluster``: it is a second implementation of the document, so a node
that sends a v1 peer something v1 does not allow, or stops answering it as v1 says, shows up
here. A frame that does not decode under the strict v1 rules (section 7: header of exactly 6,
version exactly 1, exact body lengths and field types, member records of exactly 6) is dropped
and recorded in ``rejected``. A valid message v1 cannot act on (an inconsistent HEARTBEAT) goes
to ``violations``. Sender rules receivers do not depend on (seq order, empty payload on control
kinds, which section 2 says receivers ignore) are only counted in ``notes``.

One thread owns every socket; other threads hand it closures through a queue (``call``), and
handlers and callbacks run on it. On the wire it looks like one SUB; it is one SUB per
publisher, closed when the publisher stops being live, because ``zmq_disconnect`` of a SUB with
a multipart message queued aborts libzmq (libzmq issue #2163). Not implemented, as a minimal
member needs none of it: failure detection of others and the anti-entropy it would start, seed
name resolution, TTL expiry of DATA, expiry of dead records, and repair of numbered publications
it receives (it records heartbeat positions and LISTENING starts; ``fetch`` sends a FETCH).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import queue
import random
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, TypeVar

import msgpack
import zmq

T = TypeVar("T")
Record = tuple[str, int, int, int, str, str]  # node_id, incarnation, version, status, addresses
Handler = Callable[[bytes, str], bytes | None]  # (payload, sender) -> reply payload
TopicCallback = Callable[[str, bytes, str, int], None]  # (topic, payload, sender, topic_seq)

JOINING, UP, SUSPECT, LEAVING, DOWN, LEFT, REMOVED = range(7)
STATUS_NAMES = ("joining", "up", "suspect", "leaving", "down", "left", "removed")
LIVE = (JOINING, UP, SUSPECT, LEAVING)
AT_MOST_ONCE, AT_LEAST_ONCE, EXACTLY_ONCE, ORDERED = range(4)  # guarantees
U64, MAX_HEADER_BYTES, MAX_FRAME_BYTES = 2**64 - 1, 1 << 20, 16 << 20
# Defaults of section 6.10 and the delivery settings of section 6.9
HEARTBEAT_S, JOIN_RETRY_S, LISTEN_RETRY_S = 0.2, 0.5, 0.5
PROBE_TIMEOUT_S, RETRY_INITIAL_S, RETRY_MAX_S = 0.4, 0.2, 2.0
GOSSIP_SENDS, GOSSIP_PER_HEARTBEAT, TOPICS_PER_HEARTBEAT = 4, 64, 256
SELECTIVE_MAX, FETCH_MAX, OUTBOX_MAX, BUFFER_MAX = 1024, 1024, 10_000, 10_000


class Kind(enum.IntEnum):
    HEARTBEAT, SYNC, PING, PING_REQ, ACK, LISTEN, SEND, REQUEST = 1, 3, 4, 5, 6, 7, 10, 11
    REPLY, PUBLISH, DATA, DATA_ACK, FETCH, REPUBLISH, LOST, LISTENING = range(12, 20)


WITH_PAYLOAD = (Kind.SEND, Kind.REQUEST, Kind.REPLY, Kind.PUBLISH, Kind.DATA, Kind.REPUBLISH)


# ------------------------------------------------------------------ field types (section 7.2)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    ok: Callable[[Any], bool]


def _is_name(v: Any) -> bool:
    return (
        type(v) is str
        and v != ""
        and not any(unicodedata.category(c)[0] in "CZ" for c in v)  # Cc Cf Cs Co Cn Zs Zl Zp
        and len(v.encode()) <= 255
    )


def _is_topic(v: Any) -> bool:
    return (
        type(v) is str and v != "" and "\0" not in v and len(v.encode("utf-8", "replace")) <= 1024
    )


def _is_address(v: Any) -> bool:
    if type(v) is not str or len(v) > 255:
        return False
    host, colon, port = v.rpartition(":")
    if not (colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return False
    if any(c.isspace() or c in "/@" for c in host):
        return False
    if host.startswith("["):
        return host.endswith("]") and len(host) > 2 and not any(c in "[]" for c in host[1:-1])
    return not any(c in ":[]" for c in host)


def _array(name: str, *fields: Field) -> Field:
    def ok(v: Any) -> bool:
        return (
            type(v) is list
            and len(v) == len(fields)
            and all(f.ok(x) for f, x in zip(fields, v, strict=True))
        )

    return Field(name, ok)


def _list(item: Field) -> Field:
    def ok(v: Any) -> bool:
        return type(v) is list and len(v) <= 100_000 and all(item.ok(x) for x in v)

    return Field(f"list<{item.name}>", ok)


UINT = Field("uint", lambda v: type(v) is int and 0 <= v <= U64)
SEQ = Field("seq", lambda v: UINT.ok(v) and v >= 1)
BOOL = Field("bool", lambda v: type(v) is bool)
NAME, TOPIC, ADDRESS = (
    Field("name", _is_name),
    Field("topic", _is_topic),
    Field("address", _is_address),
)
DIGEST = Field(
    "digest", lambda v: type(v) is str and len(v) == 16 and set(v) <= set("0123456789abcdef")
)
STATUS = Field("status", lambda v: type(v) is int and 0 <= v <= 6)
GUARANTEE = Field("guarantee", lambda v: type(v) is int and 0 <= v <= 3)
RELIABLE = Field("guarantee 1..3", lambda v: type(v) is int and 1 <= v <= 3)
MEMBER = _array("member", NAME, UINT, UINT, STATUS, ADDRESS, ADDRESS)
RANGE = Field("range", lambda v: _array("", SEQ, SEQ).ok(v) and v[0] <= v[1])
POSITION = _array("position", TOPIC, UINT)
FAILURE = _array("failure", SEQ, Field("reason", lambda v: type(v) is str and len(v) <= 1024))

BODIES: dict[Kind, tuple[Field, ...]] = {
    Kind.HEARTBEAT: (MEMBER, _list(MEMBER), DIGEST, _list(POSITION)),
    Kind.SYNC: (_list(MEMBER), BOOL, ADDRESS),
    Kind.PING: (UINT, ADDRESS),
    Kind.PING_REQ: (UINT, ADDRESS, NAME),
    Kind.ACK: (UINT, NAME),
    Kind.LISTEN: (_list(TOPIC),),
    Kind.SEND: (NAME,),
    Kind.REQUEST: (NAME, UINT, ADDRESS),
    Kind.REPLY: (UINT, BOOL),
    Kind.PUBLISH: (UINT, GUARANTEE),
    Kind.DATA: (NAME, UINT, SEQ, SEQ, RELIABLE, UINT),
    Kind.DATA_ACK: (UINT, UINT, UINT, UINT, _list(SEQ), _list(FAILURE), UINT, _list(SEQ)),
    Kind.FETCH: (TOPIC, _list(RANGE), ADDRESS),
    Kind.REPUBLISH: (TOPIC, SEQ, GUARANTEE),
    Kind.LOST: (TOPIC, _list(RANGE)),
    Kind.LISTENING: (_list(POSITION),),
}


# ------------------------------------------------------------------ frames (sections 2, 3, 7.1)


class Rejected(Exception):
    """A frame that version 1 does not allow."""


@dataclasses.dataclass(frozen=True)
class Message:
    kind: Kind
    sender: str
    incarnation: int
    seq: int
    body: list[Any]
    payload: bytes
    topic: str | None = None


def decode_header(frame: bytes, payload: bytes) -> Message:
    if len(frame) > MAX_HEADER_BYTES:
        raise Rejected(f"header of {len(frame)} bytes")
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types on bad data
        raise Rejected(f"header is not one valid msgpack value ({type(exc).__name__})") from None
    if type(value) is not list or len(value) != 6:
        raise Rejected(f"header is not an array of 6: {repr(value)[:60]}")
    version, kind, sender, incarnation, seq, body = value
    if type(version) is not int or version != 1:
        raise Rejected(f"version {version!r:.20} is not 1")
    if type(kind) is not int or kind not in BODIES:
        raise Rejected(f"unknown kind {kind!r:.20}")
    kind, fields = Kind(kind), BODIES[kind]
    if type(body) is not list or len(body) != len(fields):
        raise Rejected(f"{kind.name} body is not an array of {len(fields)}: {repr(body)[:60]}")
    for i, (field, item) in enumerate(zip(fields, body, strict=True)):
        if not field.ok(item):
            raise Rejected(f"{kind.name} body[{i}] is not a {field.name}: {item!r:.60}")
    if not (NAME.ok(sender) and UINT.ok(incarnation) and UINT.ok(seq)):
        raise Rejected(f"bad sender, incarnation or seq: {value[2:5]!r:.60}")
    return Message(kind, sender, incarnation, seq, body, payload)


def decode_direct(frames: Sequence[bytes]) -> Message:
    """``[header, payload]`` as read from a ROUTER, routing id removed."""
    if len(frames) != 2:
        raise Rejected(f"direct message of {len(frames)} frames")
    message = decode_header(frames[0], frames[1])
    if message.kind in (Kind.HEARTBEAT, Kind.PUBLISH):
        raise Rejected(f"{message.kind.name} sent directly")
    return message


def decode_fanout(frames: Sequence[bytes]) -> Message:
    """``[topic, header, payload]`` as read from a SUB."""
    if len(frames) != 3:
        raise Rejected(f"fan-out message of {len(frames)} frames")
    message = decode_header(frames[1], frames[2])
    if frames[0] == b"~":
        if message.kind is not Kind.HEARTBEAT:
            raise Rejected(f"{message.kind.name} on the control topic")
        return message
    if message.kind is not Kind.PUBLISH:
        raise Rejected(f"{message.kind.name} on a user topic")
    if not (frames[0][:1] == b"t" and frames[0][-1:] == b"\0" and len(frames[0]) > 2):
        raise Rejected(f"malformed topic frame {frames[0][:40]!r}")
    try:
        topic = frames[0][1:-1].decode()
    except UnicodeDecodeError:
        raise Rejected("topic frame is not UTF-8") from None
    if not _is_topic(topic):
        raise Rejected(f"invalid topic {topic!r:.40}")
    if (message.body[0] == 0) != (message.body[1] == AT_MOST_ONCE):  # section 4, PUBLISH
        raise Rejected(f"PUBLISH numbered {message.body[0]} with guarantee {message.body[1]}")
    return dataclasses.replace(message, topic=topic)


def topic_frame(topic: str) -> bytes:
    return b"t" + topic.encode() + b"\0"


def digest_of(records: Sequence[Record]) -> str:
    """The view digest of section 5.4."""
    value = 0
    for node_id, incarnation, _, status, address, _ in records:
        if status in LIVE:
            line = f"{node_id}\0{incarnation}\0{STATUS_NAMES[status]}\0{address}\n"
            value ^= int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "big")
    return f"{value:016x}"


def _record(v: list[Any]) -> Record:
    return (v[0], v[1], v[2], v[3], v[4], v[5])


def _ranges(numbers: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


# ------------------------------------------------------------------ delivery state (section 6.9)


@dataclasses.dataclass
class SeqSet:
    """Numbers as a contiguous prefix 1..upto plus those above it."""

    upto: int
    above: set[int] = dataclasses.field(default_factory=set)

    def __contains__(self, n: int) -> bool:
        return n <= self.upto or n in self.above

    def add(self, n: int) -> None:
        self.above.add(n)
        self.advance_to(self.upto)

    def advance_to(self, n: int) -> None:
        self.upto = max(self.upto, n)
        self.above = {x for x in self.above if x > self.upto}
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.remove(self.upto)


@dataclasses.dataclass
class Inbound:
    """What this peer follows of one sender's DATA stream."""

    incarnation: int
    epoch: int
    stream_id: int
    delivered: SeqSet
    finished: SeqSet
    held: dict[int, tuple[str, bytes]] = dataclasses.field(default_factory=dict)
    failures: dict[int, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Outgoing:
    number: int
    name: str
    payload: bytes
    guarantee: int
    result: Future[tuple[str, str]]  # ("DELIVERED", "") or ("FAILED", reason)
    attempts: int = 0
    due: float = 0.0
    arrived: bool = False


@dataclasses.dataclass
class Outbox:
    epoch: int
    next_seq: int = 1
    entries: dict[int, Outgoing] = dataclasses.field(default_factory=dict)
    stream_id: int | None = None


# ------------------------------------------------------------------ the peer


class V1Peer:
    """One cluster member speaking protocol version 1 on 127.0.0.1."""

    def __init__(self, node_id: str, *, heartbeat_interval_s: float = HEARTBEAT_S) -> None:
        self.node_id, self.heartbeat_interval_s = node_id, heartbeat_interval_s
        self.incarnation = (time.time_ns() // 1_000_000) << 20 | random.getrandbits(20)
        self.address = self.pub_address = ""
        self.me: Record = (node_id, self.incarnation, 0, JOINING, "", "")
        self.members: dict[str, Record] = {}
        self.counters: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.rejected: list[str] = []
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.losses: list[tuple[str, str, int, int]] = []  # publisher, topic, first, last
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]
        self._commands = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping, self._linger_ms, self._seq = False, 0, 0
        self._seeds: tuple[str, ...] = ()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._dealers: dict[str, zmq.Socket[bytes]] = {}  # by ROUTER address
        self._subs: dict[str, zmq.Socket[bytes]] = {}  # by PUB address
        self._connected: dict[str, tuple[str, str]] = {}
        self._gossip: dict[str, int] = {}
        self._handlers: dict[str, Handler] = {}
        self._topics: dict[str, TopicCallback] = {}
        self._listened: dict[str, int] = {}  # publishers sent LISTEN, by incarnation
        self._listen_due: dict[str, float] = {}  # ... not answered yet
        self._subscribers: dict[str, dict[str, int]] = {}  # LISTENs received: topic -> start
        self._published: dict[str, dict[int, tuple[int, bytes]]] = {}  # topic -> seq -> item
        self.positions: dict[tuple[str, str], tuple[int, int]] = {}  # heartbeat: inc, latest
        self.starts: dict[tuple[str, str], tuple[int, int]] = {}  # LISTENING: inc, start
        self._seen: set[tuple[str, int, str, int]] = set()  # numbered publications received
        self._inbound: dict[str, Inbound] = {}
        self._ack_due: dict[str, None] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._requests: dict[int, tuple[Future[tuple[bool, bytes]], float]] = {}
        self._relays: dict[int, tuple[int, str, str, float]] = {}
        self._last_seq: dict[tuple[str, int, str], int] = {}
        self._drops: Counter[tuple[str, Kind]] = Counter()
        self._muted = self._partitioned = False
        self._ids = itertools.count(random.getrandbits(32))
        self._epochs, self._numbers, self._probes, self._stream_ids = (
            itertools.count(1) for _ in range(4)
        )
        self._next_heartbeat = self._next_join = 0.0
        self._leave_at: float | None = None

    # -------------------------------------------------------------- API (any thread)

    def start(self, seeds: Sequence[str] = (), timeout: float = 5.0) -> None:
        """Bind, then join through ``seeds`` (none: form a cluster, UP at once)."""
        self._seeds = tuple(seeds)
        self._thread = threading.Thread(target=self._run, name=f"v1peer-{self.node_id}")
        self._thread.start()
        if not self._ready.wait(timeout) or self.errors:
            raise RuntimeError(f"peer {self.node_id} did not start: {self.errors}")

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the peer's thread (here, once that thread has ended)."""
        if self._thread in (None, threading.current_thread()) or not self._thread.is_alive():
            return fn()  # not running, or called by a handler on the peer's own thread
        future: Future[T] = Future()
        self._commands.put((fn, future))
        return future.result(timeout)

    def wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.status(self.node_id) != UP:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def member(self, node_id: str) -> Record | None:
        return self.call(lambda: self.me if node_id == self.node_id else self.members.get(node_id))

    def status(self, node_id: str) -> int | None:
        record = self.member(node_id)
        return None if record is None else record[3]

    def digest(self) -> str:
        return self.call(lambda: digest_of([self.me, *self.members.values()]))

    def subscribers(self, topic: str) -> set[str]:
        """Live members whose LISTEN lists ``topic``."""
        return self.call(
            lambda: {n for n, ts in self._subscribers.items() if topic in ts and self._live(n)}
        )

    def listeners(self) -> set[str]:
        """Live members that sent LISTEN (they read this peer's PUB)."""
        return self.call(lambda: {n for n in self._subscribers if self._live(n)})

    def stats(self) -> dict[str, int]:
        return self.call(lambda: dict(self.counters))

    def problems(self) -> dict[str, list[str]]:
        return self.call(
            lambda: {
                "rejected": [*self.rejected],
                "violations": [*self.violations],
                "errors": [*self.errors],
            }
        )

    def register(self, name: str, handler: Handler) -> None:
        self.call(lambda: self._handlers.update({name: handler}))

    def subscribe(self, topic: str, callback: TopicCallback) -> None:
        self.call(lambda: self._subscribe(topic, callback))

    def publish(self, topic: str, payload: bytes, guarantee: int = AT_MOST_ONCE) -> int:
        """Publish; returns the topic_seq (0: not numbered)."""
        return self.call(lambda: self._publish(topic, payload, guarantee))

    def send(self, node_id: str, name: str, payload: bytes) -> None:
        self.call(lambda: self._direct(node_id, Kind.SEND, [name], payload))

    def request(
        self, node_id: str, name: str, payload: bytes, timeout: float = 5.0
    ) -> tuple[bool, bytes]:
        """REQUEST, then wait for the REPLY's ``(ok, payload)``; TimeoutError without one."""
        reply = self.call(lambda: self._request(node_id, name, payload, timeout))
        return reply.result(timeout + 1.0)

    def send_data(
        self, node_id: str, name: str, payload: bytes, guarantee: int = AT_LEAST_ONCE
    ) -> Future[tuple[str, str]]:
        """Acknowledged DATA; the future ends ``("DELIVERED", "")`` or ``("FAILED", reason)``."""
        return self.call(lambda: self._send_data(node_id, name, payload, guarantee))

    def fetch(self, node_id: str, topic: str, ranges: list[list[int]]) -> None:
        self.call(lambda: self._direct(node_id, Kind.FETCH, [topic, ranges, self.address]))

    def drop_next(self, direction: str, kind: Kind, count: int = 1) -> None:
        """Test fault: lose the next ``count`` messages of ``kind``, "in" or "out"."""
        self.call(lambda: self._drops.update({(direction, kind): count}))

    def mute_until_suspected(self) -> None:
        """Test fault: no heartbeat and no ACK until this peer refutes a suspicion."""
        self.call(lambda: setattr(self, "_muted", True))

    def partition(self, cut: bool) -> None:
        """Test fault: lose everything in and out while ``cut``."""
        self.call(lambda: setattr(self, "_partitioned", cut))

    def leave(self, timeout: float = 2.0) -> None:
        """Leave gracefully (LEAVING, then LEFT), then close."""
        self.call(self._begin_leave)
        self._join(timeout)

    def close(self) -> None:
        """Close without leaving (as a crash would); safe to call again."""
        with suppress(RuntimeError):
            self.call(lambda: setattr(self, "_stopping", True))
        self._join(5.0)

    def _join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"peer {self.node_id} did not stop")

    # -------------------------------------------------------------- the thread

    def _run(self) -> None:
        self._zmq: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        try:
            self._router, self._pub = self._socket(zmq.ROUTER), self._socket(zmq.PUB)
            self._poller.register(self._router, zmq.POLLIN)
            self.address = f"127.0.0.1:{self._router.bind_to_random_port('tcp://127.0.0.1')}"
            self.pub_address = f"127.0.0.1:{self._pub.bind_to_random_port('tcp://127.0.0.1')}"
            self.me = (self.node_id, self.incarnation, 0, JOINING, self.address, self.pub_address)
            self._seeds = tuple(s for s in self._seeds if s != self.address)
            if not self._seeds:
                self._set_me(status=UP)
            self._ready.set()
            self._loop()
        except Exception as exc:
            self.errors.append(f"peer thread crashed: {exc!r}")
        finally:
            self._ready.set()
            for sock in self._sockets:
                sock.close(linger=self._linger_ms)
            self._zmq.term()
            while not self._commands.empty():  # whoever waits on a command gets an answer
                self._commands.get()[1].set_exception(RuntimeError("peer stopped"))

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        """A socket with the options of section 1."""
        sock = self._zmq.socket(kind)
        hwm = 100_000 if kind in (zmq.PUB, zmq.SUB) else 10_000
        for option, value in (
            (zmq.SNDHWM, hwm),
            (zmq.RCVHWM, hwm),
            (zmq.MAXMSGSIZE, MAX_FRAME_BYTES),
            (zmq.HEARTBEAT_IVL, 1000),
            (zmq.HEARTBEAT_TIMEOUT, 3000),
            (zmq.RECONNECT_IVL, 100),
            (zmq.RECONNECT_IVL_MAX, 1000),
            (zmq.LINGER, 200),
            (zmq.IPV6, 1),
        ):
            sock.setsockopt(option, value)
        self._sockets.append(sock)
        return sock

    def _close(self, sock: zmq.Socket[bytes]) -> None:
        with suppress(KeyError):
            self._poller.unregister(sock)
        self._sockets.remove(sock)
        sock.close(linger=0)

    def _loop(self) -> None:
        while not self._stopping:
            while not self._commands.empty():
                fn, future = self._commands.get()
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)
            for sock, _ in self._poller.poll(5):
                if not sock.closed:
                    self._drain(sock, "router" if sock is self._router else "sub")
            self._flush_acks()
            self._timers(time.monotonic())

    def _drain(self, sock: zmq.Socket[bytes], channel: str) -> None:
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                m = decode_direct(frames[1:]) if channel == "router" else decode_fanout(frames)
            except Rejected as exc:
                self.rejected.append(f"{channel}: {exc}")
                continue
            if self._partitioned or self._dropped("in", m.kind):
                continue
            if m.seq <= self._last_seq.get((m.sender, m.incarnation, channel), 0):
                self.notes[f"{m.kind.name}: seq not increasing on {channel}"] += 1
            self._last_seq[m.sender, m.incarnation, channel] = m.seq
            if m.payload and m.kind not in WITH_PAYLOAD:
                self.notes[f"{m.kind.name}: payload {m.payload[:24]!r}"] += 1
            try:
                getattr(self, f"_rx_{m.kind.name.lower()}")(m)
            except Exception as exc:  # a bug of this peer, not of the sender
                self.errors.append(f"handling {m.kind.name}: {exc!r}")
            if sock.closed:
                return

    def _dropped(self, direction: str, kind: Kind) -> bool:
        if self._drops[direction, kind] > 0:
            self._drops[direction, kind] -= 1
            self.counters[f"dropped_{direction}_{kind.name}"] += 1
            return True
        return False

    # -------------------------------------------------------------- sending

    def _header(self, kind: Kind, body: list[Any]) -> bytes:
        self._seq += 1
        header = [1, int(kind), self.node_id, self.incarnation, self._seq, body]
        return msgpack.packb(header, use_bin_type=True)  # type: ignore[no-any-return]

    def _send(self, address: str, kind: Kind, body: list[Any], payload: bytes = b"") -> None:
        header = self._header(kind, body)
        if self._partitioned or self._dropped("out", kind):
            return
        if address not in self._dealers:
            self._dealers[address] = self._socket(zmq.DEALER)
            self._dealers[address].connect(f"tcp://{address}")
        try:
            self._dealers[address].send_multipart([header, payload], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["sends_dropped_queue_full"] += 1

    def _fan_out(self, first: bytes, kind: Kind, body: list[Any], payload: bytes = b"") -> None:
        header = self._header(kind, body)
        if not (self._partitioned or self._dropped("out", kind)):
            self._pub.send_multipart([first, header, payload])

    def _direct(self, node_id: str, kind: Kind, body: list[Any], payload: bytes = b"") -> None:
        record = self.members.get(node_id)
        if record is None or record[3] not in LIVE:
            raise LookupError(f"{node_id!r} is not a live member")
        self._send(record[4], kind, body, payload)

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat = now + self.heartbeat_interval_s
        updates = []
        for node_id in sorted(self._gossip, key=lambda n: -self._gossip[n])[:GOSSIP_PER_HEARTBEAT]:
            self._gossip[node_id] -= 1
            if self._gossip[node_id] <= 0:
                del self._gossip[node_id]
            if record := self.me if node_id == self.node_id else self.members.get(node_id):
                updates.append(list(record))
        positions = [[t, max(items)] for t, items in reversed(self._published.items())]
        digest = digest_of([self.me, *self.members.values()])
        body = [list(self.me), updates, digest, positions[:TOPICS_PER_HEARTBEAT]]
        self._fan_out(b"~", Kind.HEARTBEAT, body)

    def _sync(self, address: str, want_reply: bool, only_me: bool = False) -> None:
        records = [self.me] if only_me else [self.me, *self.members.values()]
        self._send(address, Kind.SYNC, [[list(r) for r in records], want_reply, self.address])

    def _send_listen(self, node_id: str, now: float) -> None:
        self._direct(node_id, Kind.LISTEN, [sorted(self._topics)])
        self._listen_due[node_id] = now + LISTEN_RETRY_S

    # -------------------------------------------------------------- timers

    def _timers(self, now: float) -> None:
        if self._leave_at is not None and now >= self._leave_at:
            self._set_me(status=LEFT)
            self._announce(now)
            self._linger_ms, self._stopping = 200, True
            return
        if now >= self._next_heartbeat and not self._muted:
            self._heartbeat(now)
        if self.me[3] == JOINING and now >= self._next_join:  # section 6.1
            self._next_join = now + JOIN_RETRY_S
            for seed in self._seeds:
                self._sync(seed, want_reply=True, only_me=True)
        for node_id, due in list(self._listen_due.items()):
            if now >= due and self._live(node_id):
                self._send_listen(node_id, now)
            elif now >= due:
                del self._listen_due[node_id]
        for target, box in self._outboxes.items():
            for seq, entry in box.entries.items():
                if not entry.arrived and now >= entry.due and self._live(target):
                    self.counters["data_retransmits"] += entry.attempts > 0
                    self._transmit(target, box, seq, entry, now)
        for probe_id, relay in list(self._relays.items()):
            if now >= relay[3]:
                del self._relays[probe_id]
        for request_id, (reply, deadline) in list(self._requests.items()):
            if now >= deadline:
                del self._requests[request_id]
                reply.set_exception(TimeoutError(f"no reply to request {request_id}"))

    def _live(self, node_id: str) -> bool:
        record = self.members.get(node_id)
        return record is not None and record[3] in LIVE

    def _begin_leave(self) -> None:
        if self.me[3] == JOINING:  # not admitted: nothing to announce
            self._stopping = True
        elif self.me[3] not in (LEAVING, LEFT):
            self._set_me(status=LEAVING)
            now = time.monotonic()
            self._announce(now)
            self._leave_at = now + self.heartbeat_interval_s

    def _announce(self, now: float) -> None:
        """Section 6.6: a heartbeat at once and SYNC [[own record], false, own address]."""
        self._heartbeat(now)
        for record in self.members.values():
            if record[3] in LIVE:
                self._sync(record[4], want_reply=False, only_me=True)

    # -------------------------------------------------------------- membership (section 5)

    def _set_me(self, *, status: int | None = None, version: int | None = None) -> None:
        node_id, incarnation, old_version, old_status, address, pub_address = self.me
        version = old_version + 1 if version is None else version
        status = old_status if status is None else status
        self.me = (node_id, incarnation, version, status, address, pub_address)
        self._gossip[node_id] = GOSSIP_SENDS

    def _merge(self, record: Record, first_hand: bool) -> None:
        node_id, incarnation, version, status = record[:4]
        if node_id == self.node_id:
            mine = self.me
            if incarnation > mine[1]:
                self.counters["node_id_conflicts"] += 1
            elif (
                incarnation == mine[1]
                and (version, status) > mine[2:4]
                and mine[3] not in (LEAVING, LEFT)
            ):
                self._set_me(version=version + 1)  # refute, keeping our status
                self.counters["suspicions_refuted"] += 1
                self._muted, self._next_heartbeat = False, 0.0
            return
        previous = self.members.get(node_id)
        if previous is not None and record[1:4] <= previous[1:4]:
            return  # does not supersede what we hold
        self.members[node_id] = record
        if first_hand:
            self._gossip[node_id] = GOSSIP_SENDS
        self._member_changed(record, previous)

    def _member_changed(self, record: Record, previous: Record | None) -> None:
        node_id, status = record[0], record[3]
        want = (record[4], record[5]) if status in LIVE else None
        have = self._connected.pop(node_id, None)
        if have is not None and have != want:
            for sock in (self._dealers.pop(have[0], None), self._subs.pop(have[1], None)):
                if sock is not None:
                    self._close(sock)
        if want is not None:
            self._connected[node_id] = want
            if want[1] not in self._subs:
                sub = self._subs[want[1]] = self._socket(zmq.SUB)
                for topic in [b"~", *map(topic_frame, self._topics)]:
                    sub.setsockopt(zmq.SUBSCRIBE, topic)
                sub.connect(f"tcp://{want[1]}")
                self._poller.register(sub, zmq.POLLIN)
        new_life = previous is None or previous[1] != record[1]
        if new_life or status not in LIVE:
            for table in (self._listened, self._listen_due, self._subscribers):
                table.pop(node_id, None)
        if status in (LEFT, REMOVED):
            self._inbound.pop(node_id, None)
            for entry in self._outboxes.pop(node_id, Outbox(0)).entries.values():
                entry.result.set_result(("FAILED", "receiver left the cluster"))
        elif status in LIVE and (previous is None or new_life or previous[3] not in LIVE):
            for entry in self._outboxes.get(node_id, Outbox(0)).entries.values():
                entry.arrived, entry.due = False, 0.0  # everything unsettled goes at once

    # -------------------------------------------------------------- receivers (sections 4, 6)

    def _rx_heartbeat(self, m: Message) -> None:
        own, updates, _, positions = m.body
        if own[0] != m.sender or own[1] != m.incarnation:
            self.violations.append(f"inconsistent HEARTBEAT from {m.sender}: {own}")
            return
        for record in (own, *updates):
            self._merge(_record(record), first_hand=False)
        current = self.members.get(m.sender)
        if current and current[1] == m.incarnation and current[3] in LIVE:
            if self._listened.get(m.sender) != m.incarnation:
                self._listened[m.sender] = m.incarnation
                self._send_listen(m.sender, time.monotonic())
            for topic, latest in positions:
                self.positions[m.sender, topic] = (m.incarnation, latest)

    def _rx_sync(self, m: Message) -> None:
        records, want_reply, reply_address = m.body
        for record in records:
            self._merge(_record(record), first_hand=record[0] == m.sender)
        if self.me[3] == JOINING and [self.node_id, self.incarnation] in [r[:2] for r in records]:
            self._set_me(status=UP)  # admitted
        if want_reply and reply_address != self.address:
            self._sync(reply_address, want_reply=False)

    def _rx_ping(self, m: Message) -> None:
        if not self._muted:
            self._send(m.body[1], Kind.ACK, [m.body[0], self.node_id])

    def _rx_ping_req(self, m: Message) -> None:
        probe_id, reply_address, target = m.body
        if self._live(target):
            own_probe, deadline = next(self._probes), time.monotonic() + PROBE_TIMEOUT_S
            self._relays[own_probe] = (probe_id, reply_address, target, deadline)
            self._direct(target, Kind.PING, [own_probe, self.address])

    def _rx_ack(self, m: Message) -> None:
        if relay := self._relays.pop(m.body[0], None):
            self._send(relay[1], Kind.ACK, [relay[0], m.body[1]])

    def _rx_listen(self, m: Message) -> None:
        current = self.members.get(m.sender)
        if current is not None and current[1] == m.incarnation:
            before = self._subscribers.get(m.sender, {})
            latest = {t: max(items) for t, items in self._published.items()}
            starts = {t: before[t] if t in before else latest.get(t, 0) for t in m.body[0]}
            self._subscribers[m.sender] = starts
            self._send(current[4], Kind.LISTENING, [[[t, s] for t, s in starts.items()]])

    def _rx_listening(self, m: Message) -> None:
        self._listen_due.pop(m.sender, None)
        for topic, start in m.body[0]:
            self.starts[m.sender, topic] = (m.incarnation, start)

    def _rx_send(self, m: Message) -> None:
        if handler := self._handlers.get(m.body[0]):
            handler(m.payload, m.sender)
        else:
            self.counters["messages_unhandled"] += 1

    def _rx_request(self, m: Message) -> None:
        name, request_id, reply_address = m.body
        ok, result = True, b""
        if (handler := self._handlers.get(name)) is None:
            ok, result = False, f"no handler named {name!r} on node {self.node_id}".encode()
        else:
            try:
                result = handler(m.payload, m.sender) or b""
            except Exception as exc:
                ok, result = False, f"{type(exc).__name__}: {exc}".encode()
        self._send(reply_address, Kind.REPLY, [request_id, ok], result)

    def _rx_reply(self, m: Message) -> None:
        if pending := self._requests.pop(m.body[0], None):
            pending[0].set_result((m.body[1], m.payload))
        else:
            self.counters["replies_unmatched"] += 1

    def _rx_publish(self, m: Message) -> None:
        assert m.topic is not None
        self._take_publication(m, m.topic, m.body[0])

    def _rx_republish(self, m: Message) -> None:
        self.counters["publications_repaired"] += 1
        self._take_publication(m, m.body[0], m.body[1])

    def _take_publication(self, m: Message, topic: str, topic_seq: int) -> None:
        if (callback := self._topics.get(topic)) is None:
            return
        if topic_seq and (m.sender, m.incarnation, topic, topic_seq) in self._seen:
            self.counters["publications_duplicate"] += 1
            return
        self._seen.add((m.sender, m.incarnation, topic, topic_seq))
        callback(topic, m.payload, m.sender, topic_seq)

    def _rx_lost(self, m: Message) -> None:
        self.losses.extend((m.sender, m.body[0], first, last) for first, last in m.body[1])

    def _rx_fetch(self, m: Message) -> None:
        topic, ranges, reply_address = m.body
        items, lost, resent = self._published.get(topic, {}), [], 0
        for first, last in ranges:
            for n in range(first, min(last, max(items, default=0)) + 1):
                if n not in items:
                    lost.append(n)
                elif resent < FETCH_MAX:  # the rest of a long FETCH is asked for again
                    resent += 1
                    self._send(reply_address, Kind.REPUBLISH, [topic, n, items[n][0]], items[n][1])
        if lost:
            self._send(reply_address, Kind.LOST, [topic, _ranges(lost)])

    def _rx_data(self, m: Message) -> None:
        name, _, seq, low, guarantee, epoch = m.body
        stream = self._inbound.get(m.sender)
        if stream is not None and (stream.incarnation, stream.epoch) > (m.incarnation, epoch):
            self.counters["data_stale_stream"] += 1
            return
        if stream is None or (stream.incarnation, stream.epoch) < (m.incarnation, epoch):
            stream = Inbound(
                m.incarnation, epoch, next(self._stream_ids), SeqSet(low - 1), SeqSet(low - 1)
            )
            self._inbound[m.sender] = stream
        # Everything below ``low`` is settled at the sender: it counts as delivered and finished.
        stream.delivered.advance_to(low - 1)
        stream.finished.advance_to(low - 1)
        stream.failures = {s: why for s, why in stream.failures.items() if s >= low}
        stream.held = {s: held for s, held in stream.held.items() if s >= low}
        if seq > stream.finished.upto + OUTBOX_MAX:
            return  # dropped unanswered
        self._ack_due[m.sender] = None
        # EXACTLY_ONCE needs no window of message ids here: this peer forgets a sender's stream
        # only when the sender leaves, so the stream's own numbers catch every duplicate.
        if seq in stream.delivered or seq in stream.held:
            self.counters["data_duplicates"] += 1
        elif guarantee == ORDERED and seq != stream.delivered.upto + 1:
            stream.held[seq] = (name, m.payload)
        else:
            self._deliver_data(m.sender, stream, seq, name, m.payload)
        while (following := stream.delivered.upto + 1) in stream.held:
            self._deliver_data(m.sender, stream, following, *stream.held.pop(following))

    def _deliver_data(
        self, sender: str, stream: Inbound, seq: int, name: str, payload: bytes
    ) -> None:
        stream.delivered.add(seq)
        if (handler := self._handlers.get(name)) is None:
            stream.failures[seq] = f"no handler named {name!r} on node {self.node_id}"
        else:
            try:
                handler(payload, sender)
            except Exception as exc:
                stream.failures[seq] = f"handler raised {type(exc).__name__}: {exc}"[:1024]
        stream.finished.add(seq)

    def _flush_acks(self) -> None:
        """Section 6.9: one DATA_ACK per stream that received DATA this turn."""
        for sender in self._ack_due:
            stream = self._inbound.get(sender)
            if stream is None or not self._live(sender):
                continue
            finished, delivered = stream.finished, stream.delivered
            pending = sorted({s for s in delivered.above if s not in finished} | set(stream.held))
            failures = [[s, why] for s, why in sorted(stream.failures.items())]
            body: list[Any] = [stream.incarnation, stream.epoch, stream.stream_id, finished.upto]
            body += [sorted(finished.above)[:SELECTIVE_MAX], failures, delivered.upto]
            self._direct(sender, Kind.DATA_ACK, [*body, pending[:SELECTIVE_MAX]])
        self._ack_due.clear()

    def _rx_data_ack(self, m: Message) -> None:
        incarnation, epoch, stream_id, upto, finished, failures, delivered_upto, pending = m.body
        box, record = self._outboxes.get(m.sender), self.members.get(m.sender)
        if incarnation != self.incarnation or record is None or record[1] != m.incarnation:
            self.counters["data_acks_stale"] += 1
            return
        if box is None or box.epoch != epoch:
            return
        if box.stream_id is not None and box.stream_id != stream_id:
            for entry in box.entries.values():  # the receiver forgot the stream: resend all
                entry.arrived, entry.due = False, 0.0
        box.stream_id, reasons = stream_id, dict(failures)
        for seq in [s for s in box.entries if s <= upto or s in finished]:
            why = reasons.get(seq)
            box.entries.pop(seq).result.set_result(
                ("DELIVERED", "") if why is None else ("FAILED", why)
            )
        for seq, entry in box.entries.items():
            entry.arrived = entry.arrived or seq <= delivered_upto or seq in pending

    # -------------------------------------------------------------- commands

    def _subscribe(self, topic: str, callback: TopicCallback) -> None:
        self._topics[topic] = callback
        for sub in self._subs.values():
            sub.setsockopt(zmq.SUBSCRIBE, topic_frame(topic))
        for node_id in self._listened:  # a new topic set: tell every publisher again
            self._send_listen(node_id, time.monotonic())

    def _publish(self, topic: str, payload: bytes, guarantee: int) -> int:
        topic_seq = 0
        if guarantee != AT_MOST_ONCE:
            items = self._published.pop(topic, {})  # re-inserted last: the most recent topic
            topic_seq = max(items, default=0) + 1
            items[topic_seq] = (guarantee, payload)
            items.pop(topic_seq - BUFFER_MAX, None)
            self._published[topic] = items
        self._fan_out(topic_frame(topic), Kind.PUBLISH, [topic_seq, guarantee], payload)
        return topic_seq

    def _request(
        self, node_id: str, name: str, payload: bytes, timeout: float
    ) -> Future[tuple[bool, bytes]]:
        request_id, reply = next(self._ids) & U64, Future[tuple[bool, bytes]]()
        self._direct(node_id, Kind.REQUEST, [name, request_id, self.address], payload)
        self._requests[request_id] = (reply, time.monotonic() + timeout)
        return reply

    def _send_data(
        self, node_id: str, name: str, payload: bytes, guarantee: int
    ) -> Future[tuple[str, str]]:
        result = Future[tuple[str, str]]()
        if node_id not in self.members or self.members[node_id][3] in (LEFT, REMOVED):
            result.set_result(("FAILED", f"{node_id!r} is not a member"))
            return result
        box = self._outboxes.setdefault(node_id, Outbox(0))
        box.epoch = box.epoch or next(self._epochs)
        box.entries[box.next_seq] = Outgoing(next(self._numbers), name, payload, guarantee, result)
        box.next_seq += 1
        return result  # sent by the timers at once (due 0.0) while the receiver is live

    def _transmit(self, target: str, box: Outbox, seq: int, entry: Outgoing, now: float) -> None:
        low = min(box.entries, default=box.next_seq)
        body = [entry.name, entry.number, seq, low, entry.guarantee, box.epoch]
        self._direct(target, Kind.DATA, body, entry.payload)
        delay = min(RETRY_MAX_S, RETRY_INITIAL_S * 2**entry.attempts) * random.uniform(0.5, 1.0)
        entry.attempts, entry.due = entry.attempts + 1, now + delay
