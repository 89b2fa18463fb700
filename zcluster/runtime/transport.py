"""The node's ZeroMQ sockets: one ROUTER and one PUB bound, DEALERs and one SUB connected.

No protocol decisions here: the transport opens, sends and closes as told.
Every socket gets a short linger and explicit high-water marks; MAXMSGSIZE
makes libzmq refuse oversized frames before they reach Python.

ZMTP heartbeats (which drop dead TCP connections) go only on the DEALERs.
On a socket whose input stalls when its queue is full, libzmq 4.3 aborts the
process (``Assertion failed: !_io_error``, stream_engine_base.cpp) when a
heartbeat falls due on a stalled connection whose peer has gone: the ROUTER,
the SUB, and the PUB, whose input (subscriptions, or whatever a peer sends)
has a small high-water mark. The membership protocol watches peers there,
and the bound sockets drop dead connections by TCP keepalive.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import zmq

from zcluster.address import format_address, parse_address
from zcluster.config import NodeConfig
from zcluster.errors import BindError, ConfigError
from zcluster.security.config import SecurityMode
from zcluster.security.policy import DIRECT_DOMAIN, PUBSUB_DOMAIN
from zcluster.wire import CONTROL_TOPIC, SUBSCRIPTION_MAX_BYTES, personal_frame

T = TypeVar("T")

#: binding the PUB again after cutting its connections: tried this often, this long
_REBIND_PAUSE_S = 0.005
_REBIND_MAX_S = 2.0
#: what one queued subscription may keep alive: libzmq receives without copying, so a
#: message of more than 33 bytes holds the read buffer it came in (about 18 KiB)
_SUBSCRIPTION_HELD_BYTES = 32 * 1024

log = logging.getLogger("zcluster.transport")

# Plain ints: pyzmq's send_multipart and enum flag arithmetic cost more than the send itself.
MORE_FRAMES = int(zmq.SNDMORE | zmq.NOBLOCK)
LAST_FRAME = int(zmq.NOBLOCK)
NOWAIT = int(zmq.NOBLOCK)
#: the compiled send and receive of a socket: pyzmq's Python wrappers add a third to each call
SEND = zmq.backend.Socket.send
RECV = zmq.backend.Socket.recv


def receive_message(sock: zmq.Socket[bytes]) -> list[bytes]:
    """Read every part of one waiting message without blocking (raises zmq.Again if none)."""
    return _read_to_end(sock, RECV(sock, NOWAIT, False), [])


def receive_rest(sock: zmq.Socket[bytes], parts: list[bytes]) -> list[bytes]:
    """Complete a message of which ``parts`` were read without asking whether more
    follow (asking costs more than reading): the rest up to the frame that ends it.

    Only the last frame read tells where a message ends, so a message shorter
    than the frames read first takes the start of the next one with it; decoding
    rejects both (a sender that breaks the frame count costs the next message).
    """
    try:
        frame = RECV(sock, NOWAIT, False)
    except zmq.Again:
        return parts
    return _read_to_end(sock, frame, parts)


def _read_to_end(sock: zmq.Socket[bytes], frame: zmq.Frame, parts: list[bytes]) -> list[bytes]:
    """``parts`` and ``frame``, then the frames that follow it in its message."""
    parts.append(frame.bytes)
    while frame.more:
        frame = RECV(sock, NOWAIT, False)
        parts.append(frame.bytes)
    return parts


def _send_direct(sock: zmq.Socket[bytes], frames: tuple[bytes, bytes]) -> bool:
    try:
        SEND(sock, frames[0], MORE_FRAMES)  # only the first part can meet the high-water mark
    except zmq.Again:
        return False
    SEND(sock, frames[1], LAST_FRAME)
    return True


def endpoint(address: str) -> str:
    host, port = parse_address(address, allow_port_zero=True)
    return f"tcp://{format_address(host, port)}"


class ConnectionSecurity(Protocol):
    """What the transport needs to secure its connections (docs/security.md)."""

    mode: SecurityMode

    @property
    def public_key(self) -> bytes | None: ...

    @property
    def secret_key(self) -> bytes | None: ...

    def server_key(self, address: str) -> bytes | None:
        """The Curve key of the node at ``address`` (None: unknown, do not connect)."""

    def plain_credentials(self, address: str) -> tuple[bytes, bytes]:
        """The PLAIN username and password to connect to ``address`` with."""

    def greeting(self, address: str) -> tuple[tuple[bytes, bytes], float] | None:
        """The message a new connection sends first (AUTH), and in how many seconds to
        send it again; None if it sends none."""


@dataclasses.dataclass(slots=True)
class _Dealer:
    socket: zmq.Socket[bytes]
    members: set[str]
    last_used: float
    #: the server key it was connected with (curve modes)
    server_key: bytes | None = None
    #: when to say its greeting (AUTH) again
    greet_at: float = float("inf")


class Transport:
    """Owns every socket of one node; used from the node's event loop thread, but for
    ``send_if_connected`` (any thread) and the PUB (``lane.PublicationLane``)."""

    def __init__(
        self, config: NodeConfig, node_id: str, security: ConnectionSecurity | None = None
    ) -> None:
        self._config = config
        self._security = security
        self._mode = security.mode if security is not None else SecurityMode.NONE
        self._linger_ms = int(config.socket_linger_s * 1000)
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
        self.context.set(zmq.MAX_SOCKETS, config.sockets_max_count)
        # The ROUTER and the SUB only receive, the PUB and DEALERs only send: each queue
        # is sized for its direction, the received ones in bytes (docs/architecture.md).
        self.router = self._socket(zmq.ROUTER, config.receive_hwm_count, heartbeats=False)
        self.pub = self._socket(zmq.PUB, config.pubsub_hwm_count, heartbeats=False)
        # A full subscriber queue refuses (EAGAIN) instead of dropping: publishers wait
        # for room (runtime/lane.py).
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        # What a PUB receives is subscriptions, which the driver has it take as they
        # arrive: small, so many queue from a connection (thousands of topics arrive
        # at once), together no more than what the ROUTER queues from one.
        self.pub.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX_BYTES)
        self.pub.setsockopt(zmq.RCVHWM, config.receive_queue_max_bytes // _SUBSCRIPTION_HELD_BYTES)
        self.sub = self._socket(zmq.SUB, config.subscribe_hwm_count, heartbeats=False)
        # A SUB sends its subscriptions, and libzmq drops one that finds its queue full:
        # unlimited, they are as many as the topics subscribed to.
        self.sub.setsockopt(zmq.SNDHWM, 0)
        #: secured, each PUB is read by its own SUB (see connect_member), by PUB address
        self._subs: dict[str, zmq.Socket[bytes]] = {}
        #: what every SUB subscribes to, with how many times (libzmq counts them too)
        self._filters: collections.Counter[bytes] = collections.Counter()
        self.set_subscription(CONTROL_TOPIC, True)
        self.set_subscription(personal_frame(node_id), True)  # heartbeats to us alone
        #: told when such a SUB opens (with the members it reads) and before it closes
        self.on_subscribed: Callable[[zmq.Socket[bytes], set[str]], None] = _ignore
        self.on_unsubscribed: Callable[[zmq.Socket[bytes]], None] = _ignore
        self._serve_securely(self.router, DIRECT_DOMAIN)
        self._serve_securely(self.pub, PUBSUB_DOMAIN)
        self._dealers: dict[str, _Dealer] = {}
        #: held while a DEALER sends or closes: replies are sent from the callback thread
        self.dealers_lock = threading.Lock()
        #: PUB addresses our SUB is connected to, with the members behind each (a restarted
        #: or replaced member may reuse an address before the old one is declared down)
        self._subscribed_pubs: dict[str, set[str]] = {}
        self.router_port = 0
        self.pub_port = 0

    def _socket(self, kind: int, hwm: int, *, heartbeats: bool = True) -> zmq.Socket[bytes]:
        """A socket with ``hwm`` as its high-water mark, both ways."""
        sock: zmq.Socket[bytes] = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, self._linger_ms)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self._config.max_message_bytes)
        if heartbeats:  # not where input stalls (see the module)
            heartbeat_ms = int(self._config.zmtp_heartbeat_s * 1000)
            sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * heartbeat_ms)
        else:  # the kernel's probes instead, which cannot meet a stalled input
            probe_s = max(1, math.ceil(self._config.zmtp_heartbeat_s))
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, probe_s)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, probe_s)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.IPV6, 1)
        return sock

    def _serve_securely(self, sock: zmq.Socket[bytes], domain: str) -> None:
        """Make a bound socket a server whose clients the ZAP handler (runtime/zap.py)
        lets in, or not: Curve or PLAIN when secured; in every mode, within the memory
        budget (a NULL handshake asks ZAP once a domain is set)."""
        if self._mode is not SecurityMode.NONE:
            assert self._security is not None
            if self._mode.uses_curve:
                sock.setsockopt(zmq.CURVE_SERVER, 1)
                sock.setsockopt(zmq.CURVE_SECRETKEY, self._security.secret_key or b"")
            else:
                sock.setsockopt(zmq.PLAIN_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no handler: nobody in (not everybody)
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self._config.auth_handshake_timeout_s * 1000))

    def secure_client(self, sock: zmq.Socket[bytes], address: str) -> bool:
        """Give ``sock`` (any context's) the credentials to connect to ``address``; False
        if the key of the node there is unknown."""
        return self._connect_securely(sock, address) is not None

    def forget_strangers(self) -> None:
        """Close the connections to non-members (seeds): the next send connects anew,
        with a new handshake (libzmq does not try again one its peer refused)."""
        for address, dealer in list(self._dealers.items()):
            if not dealer.members:
                self._close_dealer(address)

    def _connect_securely(self, sock: zmq.Socket[bytes], address: str) -> bytes | None:
        """Set a client socket's credentials for its next connect (libzmq keeps them for
        that connection's reconnects), to ``address``. Returns the server key expected
        there (curve modes), b"" if none is; None when the key of the node there is
        unknown: then it must not connect."""
        security = self._security
        if security is None:
            return b""
        if not self._mode.uses_curve:
            username, password = security.plain_credentials(address)
            sock.setsockopt(zmq.PLAIN_USERNAME, username)
            sock.setsockopt(zmq.PLAIN_PASSWORD, password)
            return b""
        server_key = security.server_key(address)
        if server_key is None:
            return None
        sock.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key or b"")
        sock.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key or b"")
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        return server_key

    def bind(self, bind: str) -> tuple[int, int]:
        """Bind ROUTER at ``bind`` and PUB at the next port (both random for port 0)."""
        host, port = parse_address(bind, allow_port_zero=True, allow_wildcard=True)
        if port == 65535:
            raise ConfigError(f"cannot bind {bind}: the PUB socket needs the next port")
        if port == 0:
            base = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
            self.router_port = _bound(
                bind, "ROUTER socket", lambda: self.router.bind_to_random_port(base)
            )
            self.pub_port = _bound(bind, "PUB socket", lambda: self.pub.bind_to_random_port(base))
        else:
            self.router_port, self.pub_port = port, port + 1
            router, pub = format_address(host, port), format_address(host, port + 1)
            _bound(bind, f"ROUTER socket to {router}", lambda: self.router.bind(f"tcp://{router}"))
            _bound(bind, f"PUB socket to {pub}", lambda: self.pub.bind(f"tcp://{pub}"))
        return self.router_port, self.pub_port

    # ------------------------------------------------------------ sending

    def send(self, address: str, frames: tuple[bytes, bytes], now: float) -> bool:
        """Queue frames to the ROUTER at ``address``; False when the queue is full (or,
        secured, the key of the node there is unknown)."""
        dealer = self._dealers.get(address) or self._open_dealer(address, now)
        if dealer is None:
            return False
        dealer.last_used = now
        with self.dealers_lock:
            return _send_direct(dealer.socket, frames)

    def send_if_connected(self, address: str, frames: tuple[bytes, bytes]) -> bool:
        """``send`` from any thread, over an open DEALER only (False: none, or full).

        The loop opens and closes DEALERs; sending on one, or closing it, takes
        ``dealers_lock``, so another thread may send on one it finds open.
        """
        with self.dealers_lock:
            dealer = self._dealers.get(address)
            return dealer is not None and _send_direct(dealer.socket, frames)

    # ------------------------------------------------------------ connections

    def connect_member(self, node_id: str, address: str, pub_address: str, now: float) -> None:
        dealer = self._current_dealer(address, now)
        if dealer is not None:
            dealer.members.add(node_id)
        readers = self._subscribed_pubs.get(pub_address)
        if readers is None:
            readers = set()
            try:
                sock = self._subscriber_for(pub_address, address, now)
            except zmq.ZMQError as exc:
                log.warning("cannot subscribe to %s (%s): %s", node_id, pub_address, exc)
                return
            if sock is None:
                return  # the key of the node there is unknown: counted by the policy
            self._subscribed_pubs[pub_address] = readers
            if sock is not self.sub:
                self.on_subscribed(sock, readers)
        readers.add(node_id)

    def _subscriber_for(
        self, pub_address: str, address: str, now: float
    ) -> zmq.Socket[bytes] | None:
        """The SUB connected to the PUB at ``pub_address`` (of the node whose ROUTER is at
        ``address``). Unsecured, the one SUB of the node; secured, one of its own: a
        SUB cannot tell which connection a message came on, its own SUB can, and Curve
        authenticates that connection's server as the member (docs/security.md)."""
        if self._mode is SecurityMode.NONE:
            self.sub.connect(endpoint(pub_address))
            return self.sub
        sock = self._socket(zmq.SUB, self._config.subscribe_hwm_count, heartbeats=False)
        sock.setsockopt(zmq.SNDHWM, 0)  # its subscriptions are never dropped (see __init__)
        for topic_filter, count in self._filters.items():
            for _ in range(count):
                sock.setsockopt(zmq.SUBSCRIBE, topic_filter)
        try:
            if self._connect_securely(sock, address) is None:
                sock.close(linger=0)
                return None
            sock.connect(endpoint(pub_address))
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self._subs[pub_address] = sock
        return sock

    def disconnect_member(self, node_id: str, address: str, pub_address: str) -> None:
        dealer = self._dealers.get(address)
        if dealer is not None:
            dealer.members.discard(node_id)
            if not dealer.members:
                self._close_dealer(address)
        readers = self._subscribed_pubs.get(pub_address)
        if readers is not None:
            readers.discard(node_id)
            if not readers:
                del self._subscribed_pubs[pub_address]
                sock = self._subs.pop(pub_address, None)
                if sock is not None:
                    self.on_unsubscribed(sock)
                    sock.close(linger=0)
                    return
                with contextlib.suppress(zmq.ZMQError):  # libzmq already dropped it
                    self.sub.disconnect(endpoint(pub_address))

    def set_subscription(self, topic_frame: bytes, subscribed: bool) -> None:
        option = zmq.SUBSCRIBE if subscribed else zmq.UNSUBSCRIBE
        filters = self._filters
        if subscribed:
            filters[topic_frame] += 1
        elif filters[topic_frame] > 0:
            filters[topic_frame] -= 1
            if not filters[topic_frame]:
                del filters[topic_frame]
        for sock in (self.sub, *self._subs.values()):
            sock.setsockopt(option, topic_frame)

    def close_idle(self, now: float) -> None:
        """Close connections to non-members (seeds, requesters) unused for a while; say
        AUTH again on those due to."""
        idle = self._config.idle_connection_s
        for address, dealer in list(self._dealers.items()):
            if not dealer.members and now - dealer.last_used > idle:
                self._close_dealer(address)
            elif now >= dealer.greet_at:
                self._greet(address, dealer, now)

    def _greet(self, address: str, dealer: _Dealer, now: float) -> None:
        """Send the connection's greeting (AUTH), ahead of what is sent after it."""
        if self._security is None:
            return
        try:
            greeting = self._security.greeting(address)
        except ConfigError as exc:  # our own token is bad: said again later, if fixed
            dealer.greet_at = now + self._config.auth_resend_interval_s
            log.error("cannot say who this node is to %s: %s", address, exc)
            return
        if greeting is None:
            return
        frames, again_s = greeting
        dealer.greet_at = now + again_s
        with self.dealers_lock:
            _send_direct(dealer.socket, frames)  # a full queue: said again at greet_at

    def _current_dealer(self, address: str, now: float) -> _Dealer | None:
        """The DEALER to ``address`` for a member connected to now: opened if there is
        none, opened again if it was opened with another key than the member's (a
        stranger's or a seed's before, or a run with another key pair). Once per
        connection: sends take the DEALER as it is."""
        dealer = self._dealers.get(address)
        if dealer is not None and self._mode.uses_curve:
            assert self._security is not None
            if self._security.server_key(address) != dealer.server_key:
                self._renew_dealer(address, dealer, now)
                dealer = self._dealers.get(address)
        return dealer or self._open_dealer(address, now)

    def _renew_dealer(self, address: str, dealer: _Dealer, now: float) -> None:
        """Replace a DEALER by one connected afresh (its server's key changed)."""
        with self.dealers_lock:
            if self._dealers.get(address) is not dealer:
                return  # another thread renewed or closed it meanwhile
            del self._dealers[address]
            dealer.socket.close(linger=0)  # its server's key changed: nobody would read it
        renewed = self._open_dealer(address, now)
        if renewed is not None:
            renewed.members = dealer.members
            renewed.last_used = dealer.last_used

    def _open_dealer(self, address: str, now: float) -> _Dealer | None:
        """A DEALER connected to ``address``; None if libzmq refuses the address or socket."""
        strangers = [(d.last_used, a) for a, d in self._dealers.items() if not d.members]
        if len(strangers) >= self._config.non_member_connections_max_count:
            # Any peer can name a reply address: never let that grow without bound.
            self._close_dealer(min(strangers)[1])
        try:
            sock = self._socket(zmq.DEALER, self._config.direct_hwm_count)
        except zmq.ZMQError as exc:  # e.g. sockets_max_count reached
            log.warning("cannot open a connection to %s: %s", address, exc)
            return None
        try:
            server_key = self._connect_securely(sock, address)
            if server_key is None:
                sock.close(linger=0)
                return None
            sock.connect(endpoint(address))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            log.warning("cannot connect to %s: %s", address, exc)
            return None
        dealer = _Dealer(sock, set(), now, server_key or None)
        self._greet(address, dealer, now)  # first: before any other thread sends on it
        self._dealers[address] = dealer
        return dealer

    def _close_dealer(self, address: str) -> None:
        with self.dealers_lock:
            dealer = self._dealers.pop(address, None)
            if dealer is not None:
                dealer.socket.close(linger=0)

    def cut_subscribers(self, unbound: Callable[[], None]) -> None:
        """Close every connection to our PUB, by binding it again: each subscriber
        connects anew, and is let in again only if still allowed. (libzmq cannot close
        one connection of a bound socket.) ``unbound`` is called before binding again.
        The caller holds the PUB's lock."""
        last = self.pub.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(last, bytes)
        endpoint = last.decode()
        self.pub.unbind(endpoint)
        unbound()
        deadline = time.monotonic() + _REBIND_MAX_S
        while True:  # the port is free once libzmq's I/O thread has closed it
            try:
                self.pub.bind(endpoint)
                return
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(_REBIND_PAUSE_S)

    def gauges(self) -> dict[str, int]:
        """Open connections: DEALERs (to members and others) and PUBs our SUB reads."""
        return {
            "connections_direct": len(self._dealers),
            "connections_direct_to_members": sum(1 for d in self._dealers.values() if d.members),
            "connections_subscribed": len(self._subscribed_pubs),
        }

    def abandon(self) -> None:
        """Make the next close drop everything still queued, as a crashed process would."""
        self._linger_ms = 0

    def close(self) -> None:
        with self.dealers_lock:
            for address in list(self._dealers):
                dealer = self._dealers.pop(address)
                dealer.socket.close(linger=self._linger_ms)
        for sock in (self.router, self.pub, self.sub, *self._subs.values()):
            sock.close(linger=self._linger_ms)
        self.context.term()


def _ignore(*_: object) -> None:
    pass


def _bound(bind: str, what: str, do_bind: Callable[[], T]) -> T:
    """``do_bind()``, a ZeroMQ error reported as BindError naming the socket and its port
    (the ROUTER takes the bind port, the PUB the next one)."""
    try:
        return do_bind()
    except zmq.ZMQError as exc:
        raise BindError(
            f"cannot bind the {what} (--bind {bind}: the ROUTER takes that port, the PUB "
            f"the next): {exc.strerror}"
        ) from None
